// Unit tests of pusher.js against a fake WebSocket written here: the
// client's own behaviour, not pusher's (the e2e tier runs the client in
// Chromium against a real pusher). Time is node:test's mock timers
// (setTimeout and Date); Math.random is mocked where the back-off matters.
import { describe, it } from "node:test";
import assert from "node:assert/strict";

import { PusherClient, PusherError, PROTOCOL } from "../pusher.js";

const NOW = Date.UTC(2030, 0, 1); // ms; the mocked clock starts here
const SEC = 1000;

// jwt builds an unsigned token with claims; the client never verifies.
function jwt(claims) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${enc({ alg: "HS256", typ: "JWT" })}.${enc(claims)}.sig`;
}

// token is a JWT issued now (the mocked clock) living ttl seconds.
function token(ttl = 3600, extra = {}) {
  const iat = Math.floor(Date.now() / SEC);
  return jwt({ uid: "u1", iat, exp: iat + ttl, ...extra });
}

// fakeWebSocket returns a WebSocket class that records its instances. A
// test plays the server: open(), receive(), serverClose(), fail().
function fakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    static sockets = sockets;
    constructor(url, protocols) {
      this.url = new URL(url);
      this.protocols = protocols;
      this.protocol = "";
      this.readyState = 0;
      this.binaryType = "blob";
      this.sent = [];
      this.closedWith = null; // the client's close(code, reason)
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }
    get token() {
      return this.url.searchParams.get("token");
    }
    // The server's side.
    open(protocol = PROTOCOL) {
      this.readyState = 1;
      this.protocol = protocol;
      this.onopen?.({ type: "open" });
    }
    receive(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }
    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: true });
    }
    fail() {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
      this.onclose?.({ code: 1006, reason: "", wasClean: false });
    }
    // What the client sent: the seqs acked, one array per frame.
    ackFrames() {
      return this.sent.map((s) => JSON.parse(s)).filter((f) => Array.isArray(f.ack)).map((f) => f.ack);
    }
    acks() {
      return this.ackFrames().flat();
    }
    refreshes() {
      return this.sent.map((s) => JSON.parse(s)).filter((f) => typeof f.refresh === "string").map((f) => f.refresh);
    }
  }
  return FakeWebSocket;
}

// settle lets pending promise callbacks run (getToken, async handlers):
// setImmediate is not mocked.
async function settle() {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

// setup starts a client on mocked time with a fake WebSocket, recording
// its events. getToken calls tokens(n) for the n-th call (1-based).
function setup(t, { tokens = () => token(), options = {}, random } = {}) {
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: NOW });
  if (random !== undefined) t.mock.method(Math, "random", typeof random === "function" ? random : () => random);
  const WS = fakeWebSocket();
  const net = new EventTarget();
  const calls = { getToken: 0 };
  const client = new PusherClient("ws://pusher.test/ws", {
    getToken: async () => tokens(++calls.getToken),
    WebSocket: WS,
    networkEvents: net,
    ...options,
  });
  const events = { state: [], error: [], messages: [] };
  client.on("state", (s) => events.state.push(s));
  client.on("error", (e) => events.error.push(e));
  t.after(() => client.close());
  return {
    client,
    WS,
    net,
    calls,
    events,
    sockets: WS.sockets,
    last: () => WS.sockets.at(-1),
    tick: (ms) => t.mock.timers.tick(ms),
    codes: () => events.error.map((e) => e.code),
  };
}

// connected sets up a client whose first socket is open.
async function connected(t, opts) {
  const s = setup(t, opts);
  await settle();
  s.last().open();
  await settle();
  return s;
}

describe("connect", () => {
  it("asks for pusher.v1 with the token in the URL, and becomes connected", async (t) => {
    const tok = token();
    const s = setup(t, { tokens: () => tok });
    let ready = false;
    s.client.ready().then(() => (ready = true));
    assert.equal(s.client.state, "disconnected", "connects after the constructor's task");
    await settle();
    assert.equal(s.sockets.length, 1);
    const ws = s.last();
    assert.deepEqual(ws.protocols, ["pusher.v1"]);
    assert.equal(ws.url.origin + ws.url.pathname, "ws://pusher.test/ws");
    assert.equal(ws.token, tok);
    assert.equal(ws.binaryType, "arraybuffer");
    assert.deepEqual(s.events.state, ["connecting"]);
    assert.equal(ready, false);
    ws.open();
    await settle();
    assert.deepEqual(s.events.state, ["connecting", "connected"]);
    assert.equal(s.client.state, "connected");
    assert.equal(ready, true);
    await s.client.ready(); // at once when connected
  });

  it("maps http(s) URLs to ws(s) and keeps the URL's own query", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: NOW });
    const WS = fakeWebSocket();
    const c = new PusherClient("https://push.example.com/ws?region=eu", { getToken: () => "a.b.c", WebSocket: WS, networkEvents: null });
    t.after(() => c.close());
    await settle();
    assert.equal(WS.sockets[0].url.protocol, "wss:");
    assert.equal(WS.sockets[0].url.searchParams.get("region"), "eu");
    assert.equal(WS.sockets[0].token, "a.b.c");
  });

  it("refuses bad arguments at once", () => {
    const WS = fakeWebSocket();
    assert.throws(() => new PusherClient("ws://x/ws", {}), TypeError);
    assert.throws(() => new PusherClient("ftp://x/ws", { getToken: () => "t", WebSocket: WS }), TypeError);
    assert.throws(() => new PusherClient("ws://x/ws", { getToken: () => "t", WebSocket: WS, dedupWindow: 0 }), TypeError);
    if (typeof globalThis.WebSocket !== "function") {
      assert.throws(() => new PusherClient("ws://x/ws", { getToken: () => "t" }), /pass options.WebSocket/);
    }
    const c = new PusherClient("ws://x/ws", { getToken: () => "t", WebSocket: WS, networkEvents: null });
    assert.throws(() => c.on("open", () => {}), TypeError);
    c.close();
  });

  it("stops when the server does not speak pusher.v1", async (t) => {
    const s = setup(t);
    await settle();
    s.last().open(""); // an old pusher: no subprotocol echoed
    await settle();
    assert.equal(s.client.state, "disconnected");
    assert.deepEqual(s.codes(), ["unsupported"]);
    assert.equal(s.events.error[0].fatal, true);
    assert.deepEqual(s.last().closedWith, { code: 1000, reason: "client closed" });
    await assert.rejects(s.client.ready(), (e) => e instanceof PusherError && e.code === "unsupported");
  });
});

describe("messages", () => {
  it("hands a message to the handler and acks it after the handler returned", async (t) => {
    const s = await connected(t);
    const got = [];
    s.client.on("message", (m) => {
      got.push(m);
      assert.deepEqual(s.last().acks(), [], "not acked while the handler runs");
    });
    s.last().receive({ seq: 7, data: "hello", id: "msg-1", ts: "2030-01-01T00:00:00Z" });
    assert.deepEqual(got, [{ seq: 7, data: "hello", id: "msg-1", ts: "2030-01-01T00:00:00Z" }]);
    assert.deepEqual(s.last().acks(), [], "acks wait for the end of the task");
    s.tick(0);
    assert.deepEqual(s.last().ackFrames(), [[7]]);
  });

  it("batches the acks of a burst into one frame, at most 200 seqs a frame, each under 4 KiB", async (t) => {
    const s = await connected(t);
    s.client.on("message", () => {});
    const big = Number.MAX_SAFE_INTEGER - 1000;
    for (let i = 0; i < 450; i++) s.last().receive({ seq: big + i, data: "x" });
    s.tick(0);
    const frames = s.last().ackFrames();
    assert.deepEqual(frames.map((f) => f.length), [200, 200, 50]);
    for (const raw of s.last().sent) assert.ok(raw.length < 4096, `ack frame of ${raw.length} bytes`);
    assert.equal(new Set(frames.flat()).size, 450);
  });

  it("turns data_b64 into a Uint8Array", async (t) => {
    const s = await connected(t);
    const got = [];
    s.client.on("message", (m) => got.push(m));
    s.last().receive({ seq: 1, data_b64: Buffer.from([0, 255, 128, 10]).toString("base64") });
    assert.equal(got.length, 1);
    assert.ok(got[0].data instanceof Uint8Array);
    assert.deepEqual([...got[0].data], [0, 255, 128, 10]);
    assert.equal("id" in got[0], false);
    s.tick(0);
    assert.deepEqual(s.last().acks(), [1]);
  });

  it("acks after an async handler's promise resolved, not before", async (t) => {
    const s = await connected(t);
    let done;
    s.client.on("message", () => new Promise((r) => (done = r)));
    s.last().receive({ seq: 3, data: "slow" });
    await settle();
    s.tick(100);
    assert.deepEqual(s.last().acks(), []);
    done();
    await settle();
    s.tick(0);
    assert.deepEqual(s.last().acks(), [3]);
  });

  it("acks only when every handler succeeded", async (t) => {
    const s = await connected(t);
    const calls = [];
    s.client.on("message", (m) => calls.push("a" + m.seq));
    s.client.on("message", async (m) => calls.push("b" + m.seq));
    s.last().receive({ seq: 1, data: "x" });
    await settle();
    s.tick(0);
    assert.deepEqual(calls, ["a1", "b1"]);
    assert.deepEqual(s.last().acks(), [1]);
  });

  it("does not ack a message whose handler threw or rejected, reports it, and hands it over again when redelivered", async (t) => {
    const s = await connected(t);
    let fail = true;
    let calls = 0;
    s.client.on("message", (m) => {
      calls++;
      if (fail && m.seq === 1) throw new Error("db down");
      if (fail && m.seq === 2) return Promise.reject(new Error("rejected"));
    });
    s.last().receive({ seq: 1, data: "x" });
    s.last().receive({ seq: 2, data: "y" });
    await settle();
    s.tick(0);
    assert.deepEqual(s.last().acks(), []);
    assert.deepEqual(s.codes(), ["handler_error", "handler_error"]);
    assert.deepEqual(s.events.error.map((e) => [e.seq, e.fatal, e.cause.message]), [[1, false, "db down"], [2, false, "rejected"]]);
    // pusher gives up on the connection (4004) and redelivers.
    s.last().serverClose(4004, "unresponsive");
    s.tick(20 * SEC);
    await settle();
    s.last().open();
    fail = false;
    s.last().receive({ seq: 1, data: "x" });
    s.last().receive({ seq: 2, data: "y" });
    await settle();
    s.tick(0);
    assert.equal(calls, 4);
    assert.deepEqual(s.last().acks(), [1, 2]);
  });

  it("does not ack a message that came with no message handler", async (t) => {
    const s = await connected(t);
    s.last().receive({ seq: 9, data: "x" });
    s.tick(0);
    assert.deepEqual(s.last().acks(), []);
    assert.deepEqual(s.codes(), ["no_handler"]);
  });

  it("reports unreadable frames and goes on", async (t) => {
    const s = await connected(t);
    const got = [];
    s.client.on("message", (m) => got.push(m.seq));
    for (const bad of ["not json", "[1]", "null", JSON.stringify({ seq: "1", data: "x" }), JSON.stringify({ seq: 1 }),
      JSON.stringify({ seq: 2, data_b64: "%%%" }), JSON.stringify({ seq: 2 ** 60, data: "x" })]) {
      s.last().receive(bad);
    }
    s.last().receive({ type: "future-frame" }); // unknown types are for newer clients: ignored
    s.last().receive({ seq: 5, data: "fine" });
    assert.deepEqual(got, [5]);
    assert.equal(s.codes().filter((c) => c === "bad_frame").length, 7);
    assert.equal(s.client.state, "connected");
  });

  it("reports an error frame from the server", async (t) => {
    const s = await connected(t);
    s.last().receive({ type: "error", error: "something" });
    assert.deepEqual(s.events.error.map((e) => [e.code, e.reason, e.fatal]), [["server_error", "something", false]]);
  });

  it("goes on when a state or error handler throws", async (t) => {
    const s = setup(t);
    const uncaught = [];
    t.mock.method(globalThis, "queueMicrotask", (fn) => {
      try {
        fn();
      } catch (e) {
        uncaught.push(e);
      }
    });
    s.client.on("state", () => {
      throw new Error("ui bug");
    });
    await settle();
    s.last().open();
    assert.equal(s.client.state, "connected");
    assert.ok(uncaught.length >= 1 && uncaught.every((e) => e.message === "ui bug"));
  });
});

describe("de-duplication", () => {
  it("hands a message over once across a reconnect, and acks the redelivery", async (t) => {
    const s = await connected(t, { random: 0.5 });
    const got = [];
    s.client.on("message", (m) => got.push(m.seq));
    s.last().receive({ seq: 1, data: "a" });
    s.last().receive({ seq: 2, data: "b" });
    // The connection drops before the ack of 2 leaves.
    s.tick(0);
    s.last().receive({ seq: 3, data: "c" });
    s.last().serverClose(1006);
    s.tick(20 * SEC);
    await settle();
    assert.equal(s.sockets.length, 2);
    const ws2 = s.last();
    ws2.open();
    // pusher redelivers what it had not seen acked on the old connection.
    ws2.receive({ seq: 3, data: "c" });
    ws2.receive({ seq: 4, data: "d" });
    s.tick(0);
    assert.deepEqual(got, [1, 2, 3, 4]);
    assert.deepEqual(ws2.acks(), [3, 4], "the duplicate is acked on the connection it came over");
  });

  it("hands a redelivery over once while the first delivery's handler still runs, and acks it where it came", async (t) => {
    const s = await connected(t, { random: 0.5 });
    let calls = 0;
    let done;
    s.client.on("message", () => {
      calls++;
      return new Promise((r) => (done = r));
    });
    const ws1 = s.last();
    ws1.receive({ seq: 1, data: "a" });
    ws1.serverClose(4004, "unresponsive");
    s.tick(20 * SEC);
    await settle();
    const ws2 = s.last();
    ws2.open();
    ws2.receive({ seq: 1, data: "a" });
    assert.equal(calls, 1);
    done();
    await settle();
    s.tick(0);
    assert.deepEqual(ws1.sent, [], "nothing goes to a closed connection");
    assert.deepEqual(ws2.acks(), [1]);
  });

  it("remembers at most dedupWindow seqs", async (t) => {
    const s = await connected(t, { options: { dedupWindow: 3 } });
    const got = [];
    s.client.on("message", (m) => got.push(m.seq));
    for (const seq of [1, 2, 3, 4, 3, 1]) s.last().receive({ seq, data: "x" });
    assert.deepEqual(got, [1, 2, 3, 4, 1], "3 is remembered, 1 was forgotten");
  });
});

describe("reconnect", () => {
  // nextConnect returns the back-off the client chose: the time until it
  // made its next socket, to the millisecond.
  async function nextConnect(s, limit = 30 * SEC) {
    const before = s.sockets.length;
    for (let ms = 0; ms <= limit; ms++) {
      await new Promise((r) => setImmediate(r)); // enough for getToken's promise
      if (s.sockets.length > before) return ms;
      s.tick(1);
    }
    throw new Error("no reconnect within " + limit + " ms");
  }

  it("backs off with full jitter: random(0, min(20 s, 0.5 s * 2^n)), at least 100 ms", async (t) => {
    // Math.random() = 1 - 2^-53 shows each ceiling.
    const s = setup(t, { random: 1 - 2 ** -53 });
    await settle();
    const waits = [];
    for (let i = 0; i < 8; i++) {
      s.last().fail();
      waits.push(await nextConnect(s));
    }
    assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
    assert.deepEqual(s.codes(), Array(8).fill("connect_failed"));
    assert.deepEqual(s.events.error.map((e) => e.attempt), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.ok(s.events.error.every((e) => !e.fatal && e.closeCode === 1006));
    assert.equal(s.client.state, "connecting");
    assert.deepEqual(s.events.state, ["connecting"]);
  });

  it("never waits less than the floor", async (t) => {
    const s = setup(t, { random: 0 });
    await settle();
    s.last().fail();
    assert.equal(await nextConnect(s), 100);
  });

  it("picks a uniform point under the ceiling", async (t) => {
    const s = setup(t, { random: 0.25 });
    await settle();
    s.last().fail();
    assert.equal(await nextConnect(s), 125); // 0.25 * 500
    s.last().fail();
    assert.equal(await nextConnect(s), 250); // 0.25 * 1000
  });

  it("starts the back-off over after a connection that stayed up", async (t) => {
    const s = setup(t, { random: 1 - 2 ** -53 });
    await settle();
    for (let i = 0; i < 3; i++) {
      s.last().fail();
      await nextConnect(s);
    }
    s.last().open();
    s.tick(5 * SEC); // not long enough
    s.last().serverClose(1001, "server shutting down");
    assert.equal(await nextConnect(s), 4000, "the fourth attempt in a row");
    s.last().open();
    s.tick(10 * SEC);
    s.last().serverClose(1001, "server shutting down");
    assert.equal(await nextConnect(s), 500);
    assert.deepEqual(s.events.error.slice(-1).map((e) => [e.code, e.closeCode, e.reason, e.fatal]),
      [["closed", 1001, "server shutting down", false]]);
  });

  it("honours 1013 try again later: waits what the reason says, plus up to as much again", async (t) => {
    const s = await connected(t, { random: 0.5 });
    s.last().serverClose(1013, "busy; retry after 2s");
    assert.equal(await nextConnect(s), 3000, "2 s + 0.5 * 2 s");
    s.last().open();
    s.last().serverClose(1013, "busy");
    assert.equal(await nextConnect(s), 1500, "1 s when the reason names no wait");
    s.last().open();
    s.last().serverClose(1013, "busy; retry after 600s");
    assert.equal(await nextConnect(s, 60 * SEC), 30000, "at most the back-off cap, 20 s, plus its jitter");
    assert.deepEqual(s.events.error.map((e) => [e.code, e.closeCode, e.fatal]),
      Array(3).fill(["closed", 1013, false]));
  });

  it("honours a lone pusher's 1001 that asks for a wait: back after its restart, not after a growing back-off", async (t) => {
    const s = await connected(t, { random: 0.5 });
    s.last().serverClose(1001, "server shutting down; retry after 2s");
    assert.equal(await nextConnect(s), 3000, "2 s + 0.5 * 2 s");
    s.last().open();
    s.last().serverClose(1001, "server shutting down");
    assert.equal(await nextConnect(s), 500, "a cluster node's 1001 asks for none: the back-off's own wait");
  });

  it("keeps the token on a reconnect after an open connection closed", async (t) => {
    const s = await connected(t, { random: 0 });
    s.last().serverClose(4002, "slow client");
    s.tick(SEC);
    await settle();
    assert.equal(s.calls.getToken, 1);
    assert.equal(s.sockets[1].token, s.sockets[0].token);
  });

  it("asks for a new token after a connection closed before it opened", async (t) => {
    const s = setup(t, { random: 0, tokens: (n) => token(3600, { n }) });
    await settle();
    s.last().fail();
    s.tick(SEC);
    await settle();
    assert.equal(s.calls.getToken, 2);
    assert.notEqual(s.sockets[1].token, s.sockets[0].token);
    s.last().open();
    assert.equal(s.client.state, "connected");
  });

  it("retries at once when the browser is back online", async (t) => {
    const s = setup(t, { random: 1 - 2 ** -53 });
    await settle();
    for (let i = 0; i < 5; i++) {
      s.last().fail();
      await nextConnect(s);
    }
    s.last().fail(); // the next wait is 16 s
    await settle();
    s.tick(SEC);
    assert.equal(s.sockets.length, 6);
    s.net.dispatchEvent(new Event("online"));
    await settle();
    assert.equal(s.sockets.length, 7);
    // The cancelled timer does not connect a second time.
    s.tick(30 * SEC);
    await settle();
    assert.equal(s.sockets.length, 7);
    // Online while connected does nothing.
    s.last().open();
    s.net.dispatchEvent(new Event("online"));
    await settle();
    assert.equal(s.sockets.length, 7);
  });
});

describe("stopping", () => {
  it("stops on 4001 kicked: fatal error, disconnected, never reconnects", async (t) => {
    const s = await connected(t);
    s.last().serverClose(4001, "kicked");
    assert.equal(s.client.state, "disconnected");
    assert.deepEqual(s.events.error.map((e) => [e.code, e.closeCode, e.reason, e.fatal]), [["kicked", 4001, "kicked", true]]);
    s.tick(10 * 60 * SEC);
    await settle();
    assert.equal(s.sockets.length, 1);
    assert.equal(s.calls.getToken, 1);
    await assert.rejects(s.client.ready(), { code: "kicked" });
    assert.deepEqual(s.events.state, ["connecting", "connected", "disconnected"]);
  });

  it("on 4003 asks getToken for a new token and reconnects with it", async (t) => {
    const s = await connected(t, { random: 0, tokens: (n) => token(3600, { n }) });
    s.last().serverClose(4003, "token expired");
    assert.deepEqual(s.events.error.map((e) => [e.code, e.closeCode, e.fatal]), [["token_expired", 4003, false]]);
    s.tick(SEC);
    await settle();
    assert.equal(s.calls.getToken, 2);
    assert.equal(s.sockets.length, 2);
    assert.notEqual(s.sockets[1].token, s.sockets[0].token);
    s.last().open();
    assert.equal(s.client.state, "connected");
  });

  it("on 4003 stops when getToken returns the expired token again", async (t) => {
    let tok;
    const s = await connected(t, { random: 0, tokens: () => (tok ??= token()) });
    s.last().serverClose(4003, "token expired");
    s.tick(SEC);
    await settle();
    assert.equal(s.sockets.length, 1);
    assert.equal(s.client.state, "disconnected");
    assert.deepEqual(s.events.error.map((e) => [e.code, e.fatal]), [["token_expired", false], ["token_expired", true]]);
  });

  it("stops when getToken returns no token", async (t) => {
    for (const none of [null, undefined, ""]) {
      await t.test(String(none), async (t) => {
        const s = await connected(t, { random: 0, tokens: (n) => (n === 1 ? token() : none) });
        s.last().serverClose(4003, "token expired");
        s.tick(SEC);
        await settle();
        assert.equal(s.client.state, "disconnected");
        assert.deepEqual(s.codes(), ["token_expired", "no_token"]);
        assert.equal(s.events.error[1].fatal, true);
      });
    }
  });

  it("retries when getToken throws, and connects once it gives a token", async (t) => {
    const s = setup(t, {
      random: 0,
      tokens: (n) => {
        if (n < 3) throw new Error("token endpoint down");
        return token();
      },
    });
    await settle();
    assert.equal(s.sockets.length, 0);
    assert.deepEqual(s.events.error.map((e) => [e.code, e.fatal, e.cause.message]), [["token_error", false, "token endpoint down"]]);
    s.tick(SEC);
    await settle();
    s.tick(SEC);
    await settle();
    assert.equal(s.calls.getToken, 3);
    assert.equal(s.sockets.length, 1);
    s.last().open();
    assert.equal(s.client.state, "connected");
  });

  it("close() stops everything: socket closed, no reconnect, no refresh, no handler after it", async (t) => {
    const s = await connected(t, { tokens: () => token(60) });
    let messages = 0;
    let done;
    s.client.on("message", (m) => {
      messages++;
      if (m.seq === 2) return new Promise((r) => (done = r));
    });
    const ws = s.last();
    ws.receive({ seq: 1, data: "a" }); // handled, ack not sent yet
    ws.receive({ seq: 2, data: "b" }); // handler still running
    const readyBefore = s.client.ready();
    s.client.close();
    assert.equal(s.client.state, "disconnected");
    await settle();
    assert.deepEqual(ws.acks(), [1], "what was handled is acked before the close");
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "client closed" });
    assert.deepEqual(s.events.state, ["connecting", "connected", "disconnected"]);
    await readyBefore; // it was connected
    await assert.rejects(s.client.ready(), { code: "closed", fatal: true });
    // Nothing runs after it.
    const errorsBefore = s.events.error.length;
    ws.receive({ seq: 3, data: "c" });
    ws.serverClose(1001);
    done();
    await settle();
    s.tick(60 * 60 * SEC);
    await settle();
    s.net.dispatchEvent(new Event("online"));
    await settle();
    assert.equal(messages, 2);
    assert.equal(s.sockets.length, 1);
    assert.equal(s.calls.getToken, 1, "no refresh");
    assert.deepEqual(ws.refreshes(), []);
    assert.equal(s.events.error.length, errorsBefore);
    assert.deepEqual(s.events.state, ["connecting", "connected", "disconnected"]);
    s.client.close(); // idempotent
  });

  it("a message handler that calls close() has its message acked, and the next handler is not called", async (t) => {
    const s = await connected(t);
    const calls = [];
    s.client.on("message", (m) => {
      calls.push("first " + m.seq);
      if (m.data === "log out") s.client.close();
    });
    s.client.on("message", (m) => calls.push("second " + m.seq));
    const ws = s.last();
    ws.receive({ seq: 4, data: "x" });
    ws.receive({ seq: 5, data: "log out" });
    await settle();
    assert.deepEqual(calls, ["first 4", "second 4", "first 5"]);
    assert.deepEqual(ws.acks(), [4, 5]);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "client closed" });
    assert.equal(ws.sent.length, 1, "one ack frame, then the close");
  });

  it("a state handler that calls close() stops the others from running", async (t) => {
    const s = setup(t);
    const seen = [];
    s.client.on("state", (st) => {
      seen.push("a " + st);
      if (st === "connected") s.client.close();
    });
    s.client.on("state", (st) => seen.push("b " + st));
    await settle();
    s.last().open();
    assert.deepEqual(seen, ["a connecting", "b connecting", "a connected", "a disconnected", "b disconnected"]);
  });

  it("close() while waiting for getToken connects no more", async (t) => {
    let release;
    const s = setup(t, { tokens: () => new Promise((r) => (release = r)) });
    await settle();
    s.client.close();
    release(token());
    await settle();
    assert.equal(s.sockets.length, 0);
  });

  it("close() during the back-off connects no more", async (t) => {
    const s = setup(t, { random: 0 });
    await settle();
    s.last().fail();
    s.client.close();
    s.tick(60 * SEC);
    await settle();
    assert.equal(s.sockets.length, 1);
  });

  it("off and the function on returned remove a handler", async (t) => {
    const s = await connected(t);
    const got = [];
    const h = (m) => got.push("h" + m.seq);
    const off = s.client.on("message", (m) => got.push("o" + m.seq));
    s.client.on("message", h);
    s.last().receive({ seq: 1, data: "x" });
    off();
    s.client.off("message", h);
    s.client.on("message", () => {});
    s.last().receive({ seq: 2, data: "x" });
    assert.deepEqual(got, ["o1", "h1"]);
  });
});

describe("token refresh", () => {
  it("refreshes at exp minus 10 % of the lifetime (at most 60 s, at least 5 s), and follows the server's answers", async (t) => {
    const s = await connected(t, { tokens: (n) => token(n === 1 ? 3600 : 20, { n }) });
    const ws = s.last();
    // 3600 s token: refresh 60 s before exp.
    s.tick(3540 * SEC - 1);
    await settle();
    assert.equal(s.calls.getToken, 1);
    s.tick(1);
    await settle();
    assert.equal(s.calls.getToken, 2);
    const [fresh] = ws.refreshes();
    assert.ok(fresh, "a refresh frame was sent");
    assert.equal(JSON.parse(Buffer.from(fresh.split(".")[1], "base64url")).n, 2);
    // The server accepts; its exp counts. The 20 s token refreshes 5 s
    // before it (10 % would be 2 s).
    const exp = Math.floor(Date.now() / SEC) + 20;
    ws.receive({ type: "refreshed", exp });
    s.tick(15 * SEC - 1);
    await settle();
    assert.equal(s.calls.getToken, 2);
    s.tick(1);
    await settle();
    assert.equal(s.calls.getToken, 3);
    assert.equal(ws.refreshes().length, 2);
    // The server refuses that one: reported, and tried again halfway to exp.
    ws.receive({ type: "error", error: "token for another uid" });
    assert.deepEqual(s.events.error.map((e) => [e.code, e.reason, e.fatal]), [["refresh_failed", "token for another uid", false]]);
    s.tick(2.5 * SEC - 1);
    await settle();
    assert.equal(s.calls.getToken, 3);
    s.tick(1);
    await settle();
    assert.equal(s.calls.getToken, 4);
    assert.equal(ws.refreshes().length, 3);
    assert.equal(s.sockets.length, 1, "never reconnected");
  });

  it("keeps a margin of 10 % of the lifetime, within [min(5 s, half the lifetime), 60 s]", async (t) => {
    const tests = [
      { ttl: 3600, want: 3540 }, // 60 s
      { ttl: 300, want: 270 }, // 10 %
      { ttl: 60, want: 54 }, // 10 %
      { ttl: 20, want: 15 }, // 5 s
      { ttl: 8, want: 4 }, // half
      { ttl: 2, want: 1 }, // half, and the 1 s minimum
    ];
    for (const tt of tests) {
      await t.test(`${tt.ttl} s token`, async (t) => {
        const s = await connected(t, { tokens: (n) => token(tt.ttl, { n }) });
        s.tick(tt.want * SEC - 1);
        await settle();
        assert.equal(s.calls.getToken, 1, "not yet");
        s.tick(1);
        await settle();
        assert.equal(s.calls.getToken, 2, "refreshing");
      });
    }
  });

  it("uses the new token to reconnect once the server accepted it", async (t) => {
    const s = await connected(t, { random: 0, tokens: (n) => token(100, { n }) });
    s.tick(90 * SEC);
    await settle();
    const [fresh] = s.last().refreshes();
    s.last().receive({ type: "refreshed", exp: Math.floor(Date.now() / SEC) + 100 });
    s.last().serverClose(1001, "server shutting down");
    s.tick(SEC);
    await settle();
    assert.equal(s.sockets[1].token, fresh);
    assert.equal(s.calls.getToken, 2);
  });

  it("does not send the same token again; tries later", async (t) => {
    let tok; // made on the mocked clock
    const s = await connected(t, { tokens: () => (tok ??= token(100)) });
    s.tick(90 * SEC);
    await settle();
    assert.equal(s.calls.getToken, 2);
    assert.deepEqual(s.last().refreshes(), []);
    s.tick(5 * SEC - 1); // halfway to exp
    await settle();
    assert.equal(s.calls.getToken, 2);
    s.tick(1);
    await settle();
    assert.equal(s.calls.getToken, 3);
    // Then halfway again, until that is under a second: pusher's 4003
    // and the reconnect take over.
    for (let i = 0; i < 4; i++) {
      s.tick(SEC);
      await settle();
    }
    assert.equal(s.calls.getToken, 5, "at 97.5 s and 98.75 s");
    s.tick(60 * SEC);
    await settle();
    assert.equal(s.calls.getToken, 5);
  });

  it("refreshes a token with no iat against the time it was received", async (t) => {
    const s = setup(t, {
      tokens: () => jwt({ uid: "u1", exp: Math.floor(Date.now() / SEC) + 50 }),
    });
    await settle();
    s.last().open();
    s.tick(45 * SEC - 1);
    await settle();
    assert.equal(s.calls.getToken, 1);
    s.tick(1);
    await settle();
    assert.equal(s.calls.getToken, 2);
  });

  it("asks for a fresh token before connecting with one in its refresh window", async (t) => {
    const s = await connected(t, { random: 0, tokens: (n) => token(100, { n }) });
    s.last().serverClose(1006);
    s.tick(95 * SEC); // reconnect attempts fail meanwhile
    for (let i = 0; i < 3; i++) {
      await settle();
      s.last().fail();
      s.tick(SEC);
    }
    await settle();
    assert.ok(s.calls.getToken >= 2);
  });

  it("never refreshes a token without exp", async (t) => {
    const s = await connected(t, { tokens: () => "opaque-token" });
    s.tick(365 * 24 * 3600 * SEC);
    await settle();
    assert.equal(s.calls.getToken, 1);
  });

  it("reconnects with a token too big for a refresh frame", async (t) => {
    const s = await connected(t, { tokens: (n) => token(100, { pad: "x".repeat(n === 1 ? 0 : 5000) }) });
    const ws = s.last();
    s.tick(90 * SEC);
    await settle();
    assert.deepEqual(ws.refreshes(), []);
    assert.deepEqual(ws.closedWith, { code: 1000, reason: "reconnect" });
    assert.equal(s.sockets.length, 2);
    assert.ok(s.last().token.length > 5000);
    assert.deepEqual(s.codes(), [], "not an error");
  });

  it("stops when getToken returns nothing at refresh time", async (t) => {
    const s = await connected(t, { tokens: (n) => (n === 1 ? token(100) : null) });
    s.tick(90 * SEC);
    await settle();
    assert.equal(s.client.state, "disconnected");
    assert.deepEqual(s.codes(), ["no_token"]);
    assert.deepEqual(s.last().closedWith, { code: 1000, reason: "client closed" });
  });

  it("schedules refreshes of long-lived tokens past setTimeout's 24.8-day limit", async (t) => {
    const s = await connected(t, { tokens: () => token(100 * 24 * 3600) });
    s.tick(30 * 24 * 3600 * SEC);
    await settle();
    assert.equal(s.calls.getToken, 1, "a 100-day token is not refreshed after 30 days");
  });
});
