// Checked with the "dom" lib (tsconfig.dom.json): what a browser
// application has fits the options as it is.
import { PusherClient } from "../pusher.js";

const client = new PusherClient(`${location.origin.replace(/^http/, "ws")}/ws`, {
  getToken: async () => (await fetch("/token")).text(),
  WebSocket: WebSocket,
  networkEvents: window,
});
client.on("message", (msg) => {
  const li = document.createElement("li");
  li.textContent = typeof msg.data === "string" ? msg.data : `${msg.data.byteLength} bytes`;
  document.body.append(li);
});
new PusherClient(new URL("/ws", location.href), { getToken: () => "a.b.c" });
