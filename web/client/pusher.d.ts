// Types of pusher.js, the client of pusher's pusher.v1 protocol. Written by
// hand beside the JavaScript; CI type-checks test/types-test.ts against it.
// They need no "dom" lib: the WebSocket the client uses is described below.

/** The client's version (the package's). */
export declare const VERSION: string;

/** The WebSocket subprotocol the client asks for. */
export declare const PROTOCOL: "pusher.v1";

/**
 * The client's state. "connecting" covers the wait for a token, the
 * handshake and the back-off between attempts; "disconnected" is final:
 * the client stopped (close(), or a fatal error said why).
 */
export type State = "connecting" | "connected" | "disconnected";

/** One message pushed to the user. */
export interface Message {
  /** Its sequence in pusher's stream: unique per message, kept on redelivery. */
  readonly seq: number;
  /** The payload: a string when it was UTF-8 text, else its bytes. */
  readonly data: string | Uint8Array;
  /** The publisher's Nats-Msg-Id, when it set one. */
  readonly id?: string;
  /** When it was published (RFC 3339, the server's clock). */
  readonly ts?: string;
}

/**
 * Why an error event came, a stable name to switch on.
 *
 * Fatal (the client stopped; `fatal` is true):
 * - "kicked": pusher closed with 4001 (logout); reconnecting would not help.
 * - "no_token": getToken() returned no token.
 * - "token_expired" (fatal): pusher closed with 4003 and getToken() returned that same token.
 * - "unsupported": the server does not speak pusher.v1.
 * - "connect_failed" (fatal): a WebSocket could not even be created (bad URL).
 * - "closed": only as ready()'s rejection after close().
 *
 * Not fatal (the client goes on by itself):
 * - "connect_failed": the connection closed before it opened (refused token,
 *   server down or unreachable: a browser cannot tell); `attempt` counts them.
 * - "closed": an open connection closed (`closeCode`, `reason`); reconnecting.
 * - "token_expired": pusher closed with 4003; reconnecting with a new token.
 * - "token_error": getToken() threw or rejected; retried with back-off.
 * - "refresh_failed": pusher refused a refreshed token (`reason` is its error).
 * - "handler_error": a message handler threw or rejected (`seq`, `cause`);
 *   the message is not acked and comes again.
 * - "no_handler": a message came with no "message" handler; not acked.
 * - "server_error": an error frame from pusher.
 * - "bad_frame": a frame from pusher the client could not read.
 */
export type ErrorCode =
  | "kicked"
  | "no_token"
  | "token_expired"
  | "unsupported"
  | "connect_failed"
  | "closed"
  | "token_error"
  | "refresh_failed"
  | "handler_error"
  | "no_handler"
  | "server_error"
  | "bad_frame";

/** What the "error" event and ready()'s rejection carry. */
export declare class PusherError extends Error {
  readonly name: "PusherError";
  readonly code: ErrorCode;
  /** The detail: the close reason, the server's error, what failed. */
  readonly reason: string;
  /** True when the client stopped because of it. */
  readonly fatal: boolean;
  /** The WebSocket close code, when a close caused it (1006: no close frame). */
  readonly closeCode?: number;
  /** The message's seq, for "handler_error", "no_handler" and some "bad_frame". */
  readonly seq?: number;
  /** Consecutive failed attempts, for a non-fatal "connect_failed". */
  readonly attempt?: number;
  /** What was thrown, for "handler_error" and "token_error". */
  readonly cause?: unknown;
}

/**
 * A token, or nothing: null, undefined or "" stop the client ("no_token"),
 * as for a user who logged out.
 */
export type TokenResult = string | null | undefined;

/** The part of a WebSocket the client uses (the browser's, or ws's in Node). */
export interface WebSocketLike {
  readonly protocol: string;
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket class: `new (url, protocols)`. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

/** Where the "online" event comes from: window in a browser. */
export interface NetworkEvents {
  addEventListener(type: "online", listener: () => void): void;
  removeEventListener(type: "online", listener: () => void): void;
}

export interface Options {
  /**
   * Returns the JWT to connect with (pusher checks it; the client only
   * reads its exp). Called to connect, again when a connection failed
   * before it opened or closed with 4003, and before exp to refresh the
   * token on the open connection. Throwing (or rejecting) is taken as a
   * temporary failure and retried with back-off; returning no token stops
   * the client.
   */
  getToken: () => TokenResult | PromiseLike<TokenResult>;
  /** The WebSocket class; default globalThis.WebSocket (Node 20 has none: pass ws's). */
  WebSocket?: WebSocketConstructor;
  /**
   * Where "online" events come from (an immediate retry when the network
   * is back); default globalThis when it has addEventListener (window),
   * null for none.
   */
  networkEvents?: NetworkEvents | null;
  /** How many recent seqs to remember for de-duplication; default 10000. */
  dedupWindow?: number;
}

/**
 * A message handler. The message is acked once every handler returned,
 * or, for one that returns a promise, once it resolved. A handler that
 * throws or rejects leaves it unacked: it is delivered again (and handed to
 * the handlers again), after pusher closed the connection as unresponsive
 * (4004, 10 s) and the client reconnected.
 */
export type MessageHandler = (message: Message) => void | PromiseLike<unknown>;
export type StateHandler = (state: State) => void;
export type ErrorHandler = (error: PusherError) => void;

export interface EventMap {
  message: MessageHandler;
  state: StateHandler;
  error: ErrorHandler;
}

/**
 * A connection to pusher over pusher.v1 that reconnects, refreshes its
 * token before it expires, de-duplicates messages by seq and acks each
 * after the application handled it. It starts connecting when constructed.
 */
export declare class PusherClient {
  /**
   * @param url pusher's WebSocket endpoint: "wss://push.example.com/ws";
   *   http(s) URLs and, in a browser, paths such as "/ws" are accepted,
   *   as a string or a URL object.
   */
  constructor(url: string | { readonly href: string }, options: Options);
  /** The current state. */
  readonly state: State;
  /** Adds a handler; returns a function that removes it. */
  on<E extends keyof EventMap>(event: E, handler: EventMap[E]): () => void;
  /** Removes a handler added with on. */
  off<E extends keyof EventMap>(event: E, handler: EventMap[E]): void;
  /** Resolves once connected (at once if connected); rejects with a PusherError if the client stops first. */
  ready(): Promise<void>;
  /**
   * Stops for good: cancels reconnects and refreshes, emits "disconnected"
   * and removes every handler (none runs after it returns); the socket
   * closes at the end of the current task, after the acks of what was
   * handled, the message whose handler calls close() included.
   */
  close(): void;
}
