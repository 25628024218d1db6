// The npm package: what npm pack puts in it, what its exports resolve to,
// and that the declarations name what the module exports.
import { it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

import * as mod from "../pusher.js";

const dir = new URL("..", import.meta.url);
const pkg = JSON.parse(readFileSync(new URL("package.json", dir), "utf8"));

it("VERSION is package.json's version", () => {
  assert.equal(mod.VERSION, pkg.version);
});

it("exports what pusher.d.ts declares", () => {
  assert.deepEqual(Object.keys(mod).sort(), ["PROTOCOL", "PusherClient", "PusherError", "VERSION"]);
  const dts = readFileSync(new URL("pusher.d.ts", dir), "utf8");
  for (const name of Object.keys(mod)) {
    assert.match(dts, new RegExp(`export declare (const|class) ${name}\\b`));
  }
});

it("resolves by its name to the module (exports map)", async () => {
  const self = await import(pkg.name);
  assert.equal(self.PusherClient, mod.PusherClient);
});

it("packs the module, its types, README and package.json, nothing else", () => {
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: dir, encoding: "utf8" });
  const [info] = JSON.parse(out);
  assert.deepEqual(info.files.map((f) => f.path).sort(), ["README.md", "package.json", "pusher.d.ts", "pusher.js"]);
});
