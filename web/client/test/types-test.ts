// Type-checked (never run) against pusher.d.ts, strict: the API is usable
// as the README shows it, and misuse does not compile (@ts-expect-error).
import {
  PusherClient,
  PusherError,
  VERSION,
  PROTOCOL,
  type Message,
  type State,
  type ErrorCode,
  type Options,
  type WebSocketConstructor,
  type WebSocketLike,
} from "../pusher.js";

const version: string = VERSION;
const protocol: "pusher.v1" = PROTOCOL;

// A WebSocket class such as Node's ws package: structural, no DOM types.
declare const NodeWebSocket: WebSocketConstructor;

const client = new PusherClient("wss://push.example.com/ws", {
  getToken: async () => {
    const res: { token: string } = await Promise.resolve({ token: "a.b.c" });
    return res.token;
  },
  WebSocket: NodeWebSocket,
  networkEvents: null,
  dedupWindow: 5000,
});

// Synchronous tokens, and no token (logged out), are allowed.
declare const endpoint: { readonly href: string }; // a URL object
new PusherClient(endpoint, { getToken: () => "a.b.c" });
new PusherClient("/ws", { getToken: () => null });
new PusherClient("/ws", { getToken: async () => undefined });

const offMessage: () => void = client.on("message", (msg: Message) => {
  const seq: number = msg.seq;
  if (typeof msg.data === "string") {
    const text: string = msg.data;
    void text;
  } else {
    const bytes: Uint8Array = msg.data;
    void bytes.byteLength;
  }
  const id: string | undefined = msg.id;
  const ts: string | undefined = msg.ts;
  void [seq, id, ts];
});
offMessage();

// An async handler: the ack waits for it.
client.on("message", async (msg) => {
  await Promise.resolve(msg.seq);
});

client.on("state", (state: State) => {
  switch (state) {
    case "connecting":
    case "connected":
    case "disconnected":
      break;
    default: {
      const never: never = state;
      void never;
    }
  }
});

const onError = (err: PusherError) => {
  const code: ErrorCode = err.code;
  const fatal: boolean = err.fatal;
  const reason: string = err.reason;
  const closeCode: number | undefined = err.closeCode;
  const seq: number | undefined = err.seq;
  const message: string = err.message;
  if (err.code === "kicked" && err.fatal) {
    // log out
  }
  void [code, fatal, reason, closeCode, seq, message];
};
client.on("error", onError);
client.off("error", onError);

async function main(): Promise<void> {
  try {
    await client.ready();
  } catch (e) {
    if (e instanceof PusherError) {
      const c: ErrorCode = e.code;
      void c;
    }
  }
  const s: State = client.state;
  void s;
  client.close();
}
void main();

const err = new Error("x");
const isErr: boolean = new Object() instanceof PusherError;
void [version, protocol, err, isErr];

// Options can be built apart.
const opts: Options = { getToken: () => "a.b.c" };
void opts;

// Misuse does not compile.
// @ts-expect-error getToken is required
new PusherClient("/ws", {});
// @ts-expect-error getToken returns a token, not a number
new PusherClient("/ws", { getToken: () => 42 });
// @ts-expect-error no such event
client.on("open", () => {});
// @ts-expect-error a state handler gets a State, not a Message
client.on("state", (m: Message) => void m);
// @ts-expect-error state is read-only
client.state = "connected";
// @ts-expect-error the WebSocket option is a class, not an instance
new PusherClient("/ws", { getToken: () => "t", WebSocket: {} as WebSocketLike });
// @ts-expect-error data is not always a string
const notAlways: string = ({} as Message).data;
void notAlways;
