// pusher.js: the official client of pusher's pusher.v1 WebSocket protocol.
// One dependency-free ES module for browsers and Node >= 20; the types are
// in pusher.d.ts and the behaviour is described in README.md.
//
// A PusherClient holds one WebSocket to pusher at a time. Its life:
//
//   new ──▶ connecting ──open──▶ connected ──close──▶ connecting (back-off) ─┐
//              ▲    │                                                        │
//              │    └──closed before open, getToken() again, back-off────────┤
//              └─────────────────────────────────────────────────────────────┘
//   4001, getToken() gives nothing, an unsupported server, close()
//              ──▶ disconnected (final: the client never connects again)
//
// Each message is handed to the application once (de-duplicated by seq) and
// acked only after every message handler returned (or its promise resolved).

/**
 * @typedef {import("./pusher.js").Options} Options
 * @typedef {import("./pusher.js").State} State
 * @typedef {import("./pusher.js").Message} Message
 * @typedef {import("./pusher.js").ErrorCode} ErrorCode
 * @typedef {import("./pusher.js").EventMap} EventMap
 * @typedef {import("./pusher.js").WebSocketLike} WebSocketLike
 * @typedef {import("./pusher.js").WebSocketConstructor} WebSocketConstructor
 * @typedef {import("./pusher.js").NetworkEvents} NetworkEvents
 * @typedef {import("./pusher.js").TokenResult} TokenResult
 * @typedef {{ exp: number, iat?: unknown, nbf?: unknown }} Claims
 * @typedef {{ [E in keyof EventMap]: EventMap[E][] }} Handlers
 */

/** The client's version; package.json carries the same. */
export const VERSION = "0.1.0";

/** The WebSocket subprotocol the client asks for. */
export const PROTOCOL = "pusher.v1";

// Reconnect back-off, full jitter: sleep = random(0, min(cap, base * 2^n)),
// never less than the floor, so a server restart does not bring every
// client back in the same millisecond and a broken one is not hammered.
const BACKOFF_BASE = 500; // ms
const BACKOFF_CAP = 20000; // ms
const BACKOFF_FLOOR = 100; // ms
const BACKOFF_MAX_EXP = 16; // 2^16 * base is far past the cap; keeps the power finite
// A connection that stayed open this long proves the server and the token
// work: the next back-off starts from the beginning.
const STABLE_AFTER = 10000; // ms

// Token refresh happens at exp minus a margin: 10 % of the token's
// lifetime, at most 60 s, and at least 5 s (half the lifetime for tokens
// under 10 s), because getToken() is often a fetch, and a fetch on a slow
// network takes seconds whatever the token's lifetime. Never sooner than
// a second from now.
const REFRESH_MARGIN_MAX = 60000; // ms
const REFRESH_MARGIN_MIN = 5000; // ms
const REFRESH_MARGIN_SHARE = 0.1;
const REFRESH_MIN_DELAY = 1000; // ms
// setTimeout fires at once for delays over 2^31-1 ms (24.8 days).
const TIMER_MAX = 2147483647;

// pusher closes a connection whose client frame is over 4 KiB (1009).
const MAX_CLIENT_FRAME = 4096; // bytes
// Seqs per ack frame: a safe integer is at most 16 digits, so 200 of them
// with their commas and {"ack":[]} stay under MAX_CLIENT_FRAME.
const ACK_BATCH_MAX = 200;
// Recent seqs remembered for de-duplication.
const DEDUP_WINDOW = 10000;

const OPEN = 1; // WebSocket.OPEN

// Close codes pusher sends (README, "WebSocket").
const CLOSE_KICKED = 4001;
const CLOSE_TOKEN_EXPIRED = 4003;
// RFC 6455's "try again later": a node busy with a connect storm closes
// at once with the wait in the reason ("busy; retry after 2s").
const CLOSE_TRY_AGAIN = 1013;

/**
 * PusherError says why something went wrong: `code` is a stable name to
 * switch on, `reason` the detail (a close reason, the server's error), and
 * `fatal` whether the client has stopped because of it.
 */
export class PusherError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} reason
   * @param {boolean} fatal
   * @param {{closeCode?: number, seq?: number, attempt?: number, cause?: unknown}} [extra]
   */
  constructor(code, reason, fatal, extra = {}) {
    super(code + ": " + reason, extra.cause === undefined ? undefined : { cause: extra.cause });
    /** @type {"PusherError"} */
    this.name = "PusherError";
    this.code = code;
    this.reason = reason;
    this.fatal = fatal;
    if (extra.closeCode !== undefined) this.closeCode = extra.closeCode;
    if (extra.seq !== undefined) this.seq = extra.seq;
    if (extra.attempt !== undefined) this.attempt = extra.attempt;
  }
}

const EVENTS = ["message", "state", "error"];

/**
 * PusherClient connects to pusher's /ws with pusher.v1, reconnects, keeps
 * its token fresh, and hands each message to the "message" handlers once.
 * It starts connecting as soon as it is constructed; handlers attached in
 * the same task see everything, the first "connecting" state included.
 */
export class PusherClient {
  // Static after construction.
  /** @type {URL} */
  #url;
  /** @type {Options["getToken"]} */
  #getToken;
  /** @type {WebSocketConstructor} */
  #WebSocket;
  /** @type {NetworkEvents | null} */
  #net;
  /** @type {number} */
  #dedupWindow;

  // Lifecycle.
  /** @type {State} */
  #state = "disconnected";
  #stopped = false;
  /** @type {PusherError | null} why the client stopped */
  #stopError = null;
  /** @type {Handlers} */
  #handlers = { message: [], state: [], error: [] };
  /** @type {{resolve: () => void, reject: (err: PusherError) => void}[]} */
  #readyWaiters = [];
  // Bumped by every connect attempt and by the stop: an await that comes
  // back to a different generation has been overtaken and does nothing.
  #gen = 0;

  // The connection: at most one socket, connecting or open.
  /** @type {WebSocketLike | null} */
  #ws = null;
  #openedAt = 0; // Date.now() at the current socket's open, 0 before
  #attempt = 0; // reconnects since the last stable connection
  #failures = 0; // consecutive attempts that closed before opening
  /** @type {ReturnType<typeof setTimeout> | 0} */
  #reconnectTimer = 0;

  // The token.
  /** @type {string | null} */
  #token = null;
  #needToken = true; // call getToken() before the next connect
  /** @type {string | null} the token pusher closed with 4003 */
  #expiredToken = null;
  /** @type {ReturnType<typeof setTimeout> | 0} */
  #refreshTimer = 0;
  /** @type {string | null} sent in a refresh frame, not answered yet */
  #pendingRefresh = null;

  // Delivery.
  /** @type {Set<number>} seqs handled, at most #dedupWindow */
  #handled = new Set();
  /** @type {number[]} the same seqs, oldest first */
  #handledOrder = [];
  /** @type {Map<number, Set<WebSocketLike>>} seq -> sockets it arrived on, while handlers run */
  #inflight = new Map();
  /** @type {number[]} seqs to ack on #ws */
  #acks = [];
  /** @type {ReturnType<typeof setTimeout> | 0} */
  #ackTimer = 0;
  /** @type {WebSocketLike | null} the socket close() closes at the end of the task */
  #closing = null;
  /** @type {number[]} acks to send on #closing before it closes */
  #closingAcks = [];

  /**
   * @param {string | {href: string}} url pusher's WebSocket endpoint, e.g. "wss://push.example.com/ws";
   *   http(s) URLs and, in browsers, paths relative to the page ("/ws") are accepted.
   * @param {Options} options see pusher.d.ts
   */
  constructor(url, options) {
    if (!options || typeof options.getToken !== "function") {
      throw new TypeError("PusherClient: options.getToken must be a function");
    }
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError("PusherClient: no WebSocket here; pass options.WebSocket (Node 20: the ws package)");
    }
    this.#url = new URL(typeof url === "string" ? url : url?.href, globalThis.location?.href);
    if (this.#url.protocol === "http:") this.#url.protocol = "ws:";
    if (this.#url.protocol === "https:") this.#url.protocol = "wss:";
    if (this.#url.protocol !== "ws:" && this.#url.protocol !== "wss:") {
      throw new TypeError("PusherClient: url must be ws:, wss:, http: or https:, not " + this.#url.protocol);
    }
    this.#getToken = options.getToken;
    this.#WebSocket = WS;
    this.#dedupWindow = options.dedupWindow ?? DEDUP_WINDOW;
    if (!Number.isInteger(this.#dedupWindow) || this.#dedupWindow < 1) {
      throw new TypeError("PusherClient: options.dedupWindow must be a positive integer");
    }
    const net = options.networkEvents === undefined
      ? (typeof globalThis.addEventListener === "function" ? globalThis : null)
      : options.networkEvents;
    this.#net = net;
    net?.addEventListener("online", this.#onOnline);
    // After the constructor's caller attached its handlers.
    queueMicrotask(() => this.#connect());
  }

  /** The current state: "connecting", "connected" or "disconnected" (final). */
  get state() {
    return this.#state;
  }

  /**
   * on adds handler for event ("message", "state" or "error") and returns
   * a function that removes it.
   * @template {keyof EventMap} E
   * @param {E} event
   * @param {EventMap[E]} handler
   * @returns {() => void}
   */
  on(event, handler) {
    if (!EVENTS.includes(event)) throw new TypeError("PusherClient: unknown event " + String(event));
    if (typeof handler !== "function") throw new TypeError("PusherClient: handler must be a function");
    if (this.#stopped) return () => {};
    this.#handlers[event].push(handler);
    return () => this.off(event, handler);
  }

  /**
   * off removes handler from event (one registration of it).
   * @template {keyof EventMap} E
   * @param {E} event
   * @param {EventMap[E]} handler
   */
  off(event, handler) {
    /** @type {EventMap[E][] | undefined} */
    const list = this.#handlers[event];
    if (!list) return;
    const i = list.indexOf(handler);
    if (i >= 0) list.splice(i, 1);
  }

  /**
   * ready resolves when the client is connected (at once if it is), and
   * rejects with a PusherError when it stops first.
   * @returns {Promise<void>}
   */
  ready() {
    if (this.#state === "connected") return Promise.resolve();
    if (this.#stopped) return Promise.reject(this.#stopError);
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /**
   * close stops the client for good: cancels reconnects and refreshes,
   * emits the state "disconnected" and drops every handler (none runs
   * after close returns); the socket closes (1000) at the end of the
   * current task, after the acks of what was handled, the message whose
   * handler called close included.
   */
  close() {
    this.#stop(new PusherError("closed", "close() was called", true));
  }

  // ---- connecting ----

  async #connect() {
    this.#reconnectTimer = 0;
    if (this.#stopped) return;
    const gen = ++this.#gen;
    this.#setState("connecting");
    if (this.#needToken || this.#token === null || this.#refreshDue(this.#token)) {
      let token;
      try {
        token = await this.#getToken();
      } catch (err) {
        if (gen !== this.#gen) return;
        // A thrown error is taken as temporary (the app's token endpoint is
        // down during the same deploy that restarted pusher): retry.
        this.#emitError(new PusherError("token_error", "getToken() failed: " + describe(err), false, { cause: err }));
        this.#reconnectLater();
        return;
      }
      if (gen !== this.#gen) return;
      if (typeof token !== "string" || token === "") {
        this.#fail(new PusherError("no_token", "getToken() returned no token", true));
        return;
      }
      if (token === this.#expiredToken) {
        this.#fail(new PusherError("token_expired",
          "the token expired (4003) and getToken() returned the same one", true, { closeCode: CLOSE_TOKEN_EXPIRED }));
        return;
      }
      this.#token = token;
      this.#needToken = false;
      this.#expiredToken = null;
    }
    this.#open(this.#token);
  }

  /** @param {string} token */
  #open(token) {
    const url = new URL(this.#url);
    url.searchParams.set("token", token);
    let ws;
    try {
      ws = new this.#WebSocket(url.toString(), [PROTOCOL]);
    } catch (err) {
      this.#fail(new PusherError("connect_failed", "cannot create a WebSocket: " + describe(err), true, { cause: err }));
      return;
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    this.#openedAt = 0;
    ws.onopen = () => {
      if (ws === this.#ws) this.#onOpen(ws);
    };
    ws.onmessage = (ev) => {
      if (ws === this.#ws) this.#onFrame(ws, ev.data);
    };
    ws.onclose = (ev) => {
      if (ws === this.#ws) this.#onClose(ev.code, ev.reason ?? "");
    };
    ws.onerror = () => {}; // a close event follows with the code
  }

  /** @param {WebSocketLike} ws */
  #onOpen(ws) {
    if (ws.protocol !== PROTOCOL) {
      this.#fail(new PusherError("unsupported",
        "the server did not accept the " + PROTOCOL + " subprotocol (pusher too old?)", true));
      return;
    }
    this.#openedAt = Date.now();
    this.#failures = 0;
    this.#setState("connected");
    for (const w of this.#readyWaiters.splice(0)) w.resolve();
    this.#scheduleRefresh(this.#token, null);
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  #onClose(code, reason) {
    const openedAt = this.#openedAt;
    this.#detach();
    if (openedAt === 0) {
      // Closed before open: pusher refused the token (401: browsers show
      // no status), or it is down or unreachable. The two look alike
      // here, so both get a fresh token and the back-off.
      this.#failures++;
      this.#needToken = true;
      this.#emitError(new PusherError("connect_failed", "connection closed before it opened (" + code + ")", false,
        { closeCode: code, attempt: this.#failures }));
      this.#reconnectLater();
      return;
    }
    if (Date.now() - openedAt >= STABLE_AFTER) this.#attempt = 0;
    if (code === CLOSE_KICKED) {
      this.#fail(new PusherError("kicked", reason || "kicked", true, { closeCode: code }));
      return;
    }
    if (code === CLOSE_TOKEN_EXPIRED) {
      this.#expiredToken = this.#token;
      this.#needToken = true;
      this.#emitError(new PusherError("token_expired", reason || "token expired", false, { closeCode: code }));
    } else {
      this.#emitError(new PusherError("closed", reason || "connection closed", false, { closeCode: code }));
    }
    this.#reconnectLater(retryAfter(code, reason));
  }

  // detach forgets the current socket and what belonged to it.
  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    this.#openedAt = 0;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = 0;
    clearTimeout(this.#ackTimer);
    this.#ackTimer = 0;
    this.#acks = []; // pusher redelivers them; they are acked then, unhandled again
    this.#pendingRefresh = null;
  }

  // reconnectLater waits out the back-off, or, when the server asked for
  // a wait (1013, or a lone node's 1001), that wait plus up to as much again, so the clients it
  // turned away do not all come back at the same instant.
  /** @param {number} [wait] ms the server asked for */
  #reconnectLater(wait = 0) {
    if (this.#stopped) return;
    this.#setState("connecting");
    const ceiling = Math.min(BACKOFF_CAP, BACKOFF_BASE * 2 ** Math.min(this.#attempt, BACKOFF_MAX_EXP));
    const jitter = Math.random();
    const delay = wait > 0 ? wait * (1 + jitter) : Math.max(BACKOFF_FLOOR, jitter * ceiling);
    this.#attempt++;
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  // The browser is back online: a reconnect waiting out its back-off goes now.
  #onOnline = () => {
    if (this.#stopped || !this.#reconnectTimer) return;
    clearTimeout(this.#reconnectTimer);
    this.#connect();
  };

  // ---- frames from the server ----

  /**
   * @param {WebSocketLike} ws
   * @param {unknown} raw
   */
  #onFrame(ws, raw) {
    let f;
    try {
      if (typeof raw !== "string") throw new Error("binary frame");
      f = JSON.parse(raw);
      if (f === null || typeof f !== "object" || Array.isArray(f)) throw new Error("not an object");
    } catch (err) {
      this.#emitError(new PusherError("bad_frame", "unreadable frame from the server: " + describe(err), false));
      return;
    }
    if (typeof f.type === "string") {
      if (f.type === "refreshed") this.#onRefreshed(f);
      else if (f.type === "error") this.#onServerError(f);
      // Other types are for newer clients.
      return;
    }
    if (!Number.isSafeInteger(f.seq) || f.seq < 0) {
      this.#emitError(new PusherError("bad_frame", "message without a valid seq", false));
      return;
    }
    let data;
    if (typeof f.data === "string") {
      data = f.data;
    } else if (typeof f.data_b64 === "string") {
      try {
        data = fromBase64(f.data_b64);
      } catch (err) {
        this.#emitError(new PusherError("bad_frame", "bad data_b64: " + describe(err), false, { seq: f.seq }));
        return;
      }
    } else {
      this.#emitError(new PusherError("bad_frame", "message without data", false, { seq: f.seq }));
      return;
    }
    /** @type {{ -readonly [K in keyof Message]: Message[K] }} */
    const msg = { seq: f.seq, data };
    if (typeof f.id === "string") msg.id = f.id;
    if (typeof f.ts === "string") msg.ts = f.ts;
    this.#deliver(ws, msg);
  }

  // deliver hands msg to the message handlers unless it was handled
  // before (then it is only acked again: this connection needs the ack)
  // or is being handled now (then the ack, when it comes, covers this
  // connection too).
  /**
   * @param {WebSocketLike} ws
   * @param {Message} msg
   */
  #deliver(ws, msg) {
    const seq = msg.seq;
    if (this.#handled.has(seq)) {
      this.#ack(ws, seq);
      return;
    }
    const on = this.#inflight.get(seq);
    if (on) {
      on.add(ws);
      return;
    }
    const handlers = this.#handlers.message.slice();
    if (handlers.length === 0) {
      // Acking would lose it; unacked, pusher delivers it again.
      this.#emitError(new PusherError("no_handler", "message " + seq + " arrived with no message handler; not acked", false, { seq }));
      return;
    }
    this.#inflight.set(seq, new Set([ws]));
    const pending = [];
    let failed = false;
    let failure;
    for (const h of handlers) {
      if (!this.#handlers.message.includes(h)) continue; // removed meanwhile, or close() was called
      try {
        const r = h(msg);
        if (isThenable(r)) pending.push(r);
      } catch (err) {
        if (!failed) {
          failed = true;
          failure = err;
        }
      }
    }
    if (failed || pending.length === 0) {
      this.#settle(seq, failed, failure);
      return;
    }
    Promise.all(pending).then(() => this.#settle(seq, false), (err) => this.#settle(seq, true, err));
  }

  // settle ends the handling of seq: handled, it is remembered and acked
  // on the current connection if the message came over it; failed, it is
  // neither, so pusher delivers it again (see README, "Handler errors").
  /**
   * @param {number} seq
   * @param {boolean} failed
   * @param {unknown} [err]
   */
  #settle(seq, failed, err) {
    const on = this.#inflight.get(seq);
    this.#inflight.delete(seq);
    if (this.#stopped) {
      // Handled while close() is closing the socket it came over: ack it there.
      if (!failed && this.#closing && on?.has(this.#closing)) this.#closingAcks.push(seq);
      return;
    }
    if (failed) {
      this.#emitError(new PusherError("handler_error", "message handler failed for seq " + seq + ": " + describe(err),
        false, { seq, cause: err }));
      return;
    }
    this.#remember(seq);
    if (this.#ws && on?.has(this.#ws)) this.#ack(this.#ws, seq);
  }

  /** @param {number} seq */
  #remember(seq) {
    if (this.#handled.has(seq)) return;
    this.#handled.add(seq);
    this.#handledOrder.push(seq);
    if (this.#handledOrder.length > this.#dedupWindow) {
      const oldest = this.#handledOrder.shift();
      if (oldest !== undefined) this.#handled.delete(oldest);
    }
  }

  // ack queues seq for the next ack frame on ws: sent after the current
  // task (so a burst of messages shares a frame), or at once when full.
  /**
   * @param {WebSocketLike} ws
   * @param {number} seq
   */
  #ack(ws, seq) {
    if (ws !== this.#ws) return;
    this.#acks.push(seq);
    if (this.#acks.length >= ACK_BATCH_MAX) {
      this.#flushAcks();
    } else if (!this.#ackTimer) {
      this.#ackTimer = setTimeout(() => this.#flushAcks(), 0);
    }
  }

  #flushAcks() {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = 0;
    const ws = this.#ws;
    if (!ws || ws.readyState !== OPEN) {
      this.#acks = [];
      return;
    }
    while (this.#acks.length > 0) {
      const batch = this.#acks.splice(0, ACK_BATCH_MAX);
      if (!this.#send(ws, JSON.stringify({ ack: batch }))) return;
    }
  }

  /**
   * @param {WebSocketLike} ws
   * @param {string} frame
   * @returns {boolean} whether the socket took it
   */
  #send(ws, frame) {
    try {
      ws.send(frame);
      return true;
    } catch {
      return false; // closing: the close event follows
    }
  }

  // ---- token refresh ----

  // refreshDue: the token is in its refresh window already (or unreadable
  // as a JWT, then only the server can tell: false).
  /** @param {string} token */
  #refreshDue(token) {
    const claims = jwtClaims(token);
    return claims !== null && refreshDelay(claims, Date.now()) <= REFRESH_MIN_DELAY;
  }

  // scheduleRefresh sets the refresh timer for token, whose exp (unix
  // seconds) the server may have told (exp) better than its claims.
  /**
   * @param {string | null} token
   * @param {number | null} exp
   */
  #scheduleRefresh(token, exp) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = 0;
    const claims = jwtClaims(token);
    if (claims === null) return; // no exp: nothing expires
    if (exp !== null) claims.exp = exp;
    this.#refreshIn(refreshDelay(claims, Date.now()));
  }

  /** @param {number} delay ms */
  #refreshIn(delay) {
    clearTimeout(this.#refreshTimer);
    if (delay > TIMER_MAX) {
      this.#refreshTimer = setTimeout(() => this.#scheduleRefresh(this.#token, null), TIMER_MAX);
      return;
    }
    this.#refreshTimer = setTimeout(() => this.#refresh(), delay);
  }

  // retryRefresh tries again halfway to the token's expiry, or gives up
  // when that is too close: pusher then closes with 4003 and the reconnect
  // asks getToken() for a new one.
  #retryRefresh() {
    const claims = jwtClaims(this.#token);
    if (claims === null) return;
    const half = (claims.exp * 1000 - Date.now()) / 2;
    if (half >= REFRESH_MIN_DELAY) this.#refreshIn(half);
  }

  async #refresh() {
    this.#refreshTimer = 0;
    const ws = this.#ws;
    if (!ws || this.#state !== "connected" || this.#pendingRefresh !== null) return;
    let token;
    try {
      token = await this.#getToken();
    } catch (err) {
      if (ws !== this.#ws) return;
      this.#emitError(new PusherError("token_error", "getToken() failed: " + describe(err), false, { cause: err }));
      this.#retryRefresh();
      return;
    }
    if (ws !== this.#ws) return; // reconnected meanwhile: that asks for its own token
    if (typeof token !== "string" || token === "") {
      this.#fail(new PusherError("no_token", "getToken() returned no token", true));
      return;
    }
    if (token === this.#token) {
      this.#retryRefresh(); // the app's cache has nothing newer yet
      return;
    }
    const frame = JSON.stringify({ refresh: token });
    if (frame.length > MAX_CLIENT_FRAME) {
      // Too big for a client frame (pusher would close with 1009): use it
      // on a new connection instead. Unacked messages come back there.
      this.#token = token;
      this.#reconnectNow(ws);
      return;
    }
    this.#pendingRefresh = token;
    this.#send(ws, frame);
  }

  /** @param {{exp?: unknown}} f */
  #onRefreshed(f) {
    const token = this.#pendingRefresh;
    if (token === null) return;
    this.#pendingRefresh = null;
    this.#token = token;
    this.#scheduleRefresh(token, typeof f.exp === "number" ? f.exp : null);
  }

  /** @param {{error?: unknown}} f */
  #onServerError(f) {
    const reason = typeof f.error === "string" ? f.error : "error";
    if (this.#pendingRefresh !== null) {
      // Answers the refresh: the old token and its expiry stay.
      this.#pendingRefresh = null;
      this.#emitError(new PusherError("refresh_failed", reason, false));
      this.#retryRefresh();
      return;
    }
    this.#emitError(new PusherError("server_error", reason, false));
  }

  // reconnectNow closes ws and connects again at once, without an error.
  /** @param {WebSocketLike} ws */
  #reconnectNow(ws) {
    this.#flushAcks();
    this.#detach();
    try {
      ws.close(1000, "reconnect");
    } catch {
      // already closing
    }
    this.#connect();
  }

  // ---- stopping and events ----

  /** @param {PusherError} err */
  #fail(err) {
    if (this.#stopped) return;
    this.#emitError(err);
    this.#stop(err);
  }

  /** @param {PusherError} err */
  #stop(err) {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#stopError = err;
    this.#gen++;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = 0;
    this.#net?.removeEventListener("online", this.#onOnline);
    const ws = this.#ws;
    const acks = this.#acks;
    this.#detach();
    if (ws) {
      // The socket closes once the current task's synchronous code is
      // done, so a message handler that calls close() still has its own
      // message acked (#settle), with whatever was handled before.
      this.#closing = ws;
      this.#closingAcks = acks;
      queueMicrotask(() => this.#finishClose(ws));
    }
    this.#setState("disconnected");
    for (const w of this.#readyWaiters.splice(0)) w.reject(err);
    this.#handlers = { message: [], state: [], error: [] };
  }

  /**
   * finishClose sends the acks close() kept, then closes the socket.
   * @param {WebSocketLike} ws
   */
  #finishClose(ws) {
    const acks = this.#closingAcks;
    this.#closing = null;
    this.#closingAcks = [];
    if (ws.readyState === OPEN) {
      for (let i = 0; i < acks.length; i += ACK_BATCH_MAX) {
        if (!this.#send(ws, JSON.stringify({ ack: acks.slice(i, i + ACK_BATCH_MAX) }))) break;
      }
    }
    try {
      ws.close(1000, "client closed");
    } catch {
      // already closing
    }
  }

  /** @param {State} s */
  #setState(s) {
    if (this.#state === s) return;
    this.#state = s;
    this.#emit("state", s);
  }

  /** @param {PusherError} err */
  #emitError(err) {
    this.#emit("error", err);
  }

  // emit calls event's handlers; one that throws is reported as uncaught
  // (as an event listener's would be) without stopping the others or the client.
  /**
   * @param {"state" | "error"} event
   * @param {State | PusherError} arg what the event's handlers take
   */
  #emit(event, arg) {
    const handlers = /** @type {((arg: unknown) => void)[]} */ (this.#handlers[event].slice());
    for (const h of handlers) {
      if (!this.#handlers[event].includes(/** @type {any} */ (h))) continue; // removed meanwhile, or close() was called
      try {
        h(arg);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

// retryAfter reads the wait out of a close reason that names one (a 1013,
// "busy; retry after 2s", or a lone pusher's 1001, "server shutting down;
// retry after 2s"): ms, at most the back-off cap; 1 s for a 1013 that says
// none; 0 (the back-off's own wait) for any other close.
/**
 * @param {number} code
 * @param {string} reason
 */
function retryAfter(code, reason) {
  const m = /retry after (\d+)s/.exec(reason);
  if (!m && code !== CLOSE_TRY_AGAIN) return 0;
  const secs = m ? Number(m[1]) : 1;
  return Math.min(BACKOFF_CAP, Math.max(1, secs) * 1000);
}

// refreshDelay is how long from now (ms) until a token with these claims
// should be refreshed: exp minus its margin (see REFRESH_MARGIN_*; the
// lifetime runs from iat, or nbf, or now), at least REFRESH_MIN_DELAY.
/**
 * @param {Claims} claims
 * @param {number} now ms
 */
function refreshDelay(claims, now) {
  const exp = claims.exp * 1000;
  const from = typeof claims.iat === "number" ? claims.iat * 1000 : typeof claims.nbf === "number" ? claims.nbf * 1000 : now;
  const lifetime = Math.max(0, exp - from);
  const floor = Math.min(REFRESH_MARGIN_MIN, lifetime / 2);
  const margin = Math.min(REFRESH_MARGIN_MAX, Math.max(floor, lifetime * REFRESH_MARGIN_SHARE));
  return Math.max(REFRESH_MIN_DELAY, exp - margin - now);
}

// jwtClaims decodes a JWT's payload without verifying it (that is the
// server's job) and returns it if it has a numeric exp, else null.
/**
 * @param {string | null} token
 * @returns {Claims | null}
 */
function jwtClaims(token) {
  if (typeof token !== "string") return null;
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = (parts[1] ?? "").replace(/-/g, "+").replace(/_/g, "/");
    const json = new TextDecoder().decode(fromBase64(b64 + "===".slice((b64.length + 3) % 4)));
    const claims = JSON.parse(json);
    return claims !== null && typeof claims === "object" && typeof claims.exp === "number" ? claims : null;
  } catch {
    return null;
  }
}

// fromBase64 decodes standard base64 into bytes.
/**
 * @param {string} s
 * @returns {Uint8Array}
 */
function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * @param {unknown} v
 * @returns {v is PromiseLike<unknown>}
 */
function isThenable(v) {
  return (typeof v === "object" || typeof v === "function") && v !== null &&
    typeof (/** @type {{then?: unknown}} */ (v)).then === "function";
}

/** @param {unknown} err */
function describe(err) {
  return err instanceof Error ? err.message : String(err);
}
