/**
 * A small typed client for smsgate: auth attached once, `send`, `get`,
 * `watch` that reconnects and resumes from its last token, `waitFor` a status,
 * `watchReplies` (the same for the app's replies), `getUsage`, and errors
 * with their google.rpc details decoded (SmsgateError).
 *
 * It speaks gRPC over HTTP/2 through Connect for Node; the generated clients
 * stay reachable as `client.sms`, `client.inbound` and `client.usage` for
 * every other call.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
  type BadRequest_FieldViolation,
  type QuotaFailure_Violation,
} from "./gen/google/rpc/error_details_pb.js";
import { type Message, MessageStatus, type StatusEvent } from "./gen/smsgate/v1/message_pb.js";
import {
  InboundService,
  type Reply,
  type WatchRepliesResponse,
} from "./gen/smsgate/v1/inbound_service_pb.js";
import {
  type BatchSendResponse,
  BatchSendRequestSchema,
  SmsService,
  SendSmsRequestSchema,
} from "./gen/smsgate/v1/sms_service_pb.js";
import { type GetUsageResponse, UsageService } from "./gen/smsgate/v1/usage_service_pb.js";

/** The statuses a message never leaves. */
export const TERMINAL: ReadonlySet<MessageStatus> = new Set([
  MessageStatus.DELIVERED,
  MessageStatus.UNDELIVERED,
  MessageStatus.FAILED,
  MessageStatus.CANCELED,
  MessageStatus.EXPIRED,
]);

/** Where the server is and the app's token (`ak_....as_...`). */
export interface ClientOptions {
  /** `host:port`, or a URL: `http://host:port`, `https://host:port` (TLS). */
  target: string;
  token: string;
  /** TLS (and mTLS with a client certificate); `true` trusts the system's CAs. */
  tls?: TlsOptions | boolean;
}

/** PEM contents of the CA to trust and of the client certificate for mTLS. */
export interface TlsOptions {
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name to check the server's certificate against, when not the target's host. */
  serverName?: string;
}

/** Optional fields of a SendSms call; a `requestId` is generated when absent. */
export interface SendOptions {
  requestId?: string;
  senderId?: string;
  labels?: Record<string, string>;
  sendTime?: Date;
}

/** What `waitFor` waits for, and how long. */
export interface WaitOptions {
  until?: ReadonlySet<MessageStatus>;
  timeoutMs?: number;
}

/** Which messages to list (newest first); `pageSize` is per call to the server. */
export interface ListFilter {
  statuses?: MessageStatus[];
  phoneNumber?: string;
  batchId?: string;
  startTime?: Date;
  endTime?: Date;
  pageSize?: number;
}

/** Which events to watch, and where to resume. */
export interface WatchFilter {
  messageIds?: string[];
  batchId?: string;
  statuses?: MessageStatus[];
  resumeToken?: string;
}

/** Where a reply watch starts, where it keeps its place, and what stops it. */
export interface ReplyWatchOptions {
  /** Start after the reply of this token (a `ReplyWatch.resumeToken` kept earlier). */
  resumeToken?: string;
  /**
   * A file to start from (when no `resumeToken` is given) and to save the token
   * in: where the stream starts once it is open, then each reply's once the
   * caller asks for the next, so a program that restarts misses no reply.
   */
  tokenFile?: string;
  signal?: AbortSignal;
}

/** A failed call: the gRPC code and the google.rpc details the server sent. */
export class SmsgateError extends Error {
  /** ErrorInfo.reason, e.g. `INVALID_PHONE_NUMBER`; empty when the server sent none. */
  readonly reason: string;
  readonly metadata: Record<string, string>;
  /** BadRequest field violations: one per bad field. */
  readonly fieldViolations: BadRequest_FieldViolation[];
  /** RetryInfo.retry_delay in milliseconds, when the server said when to retry. */
  readonly retryAfterMs: number | undefined;
  readonly quotaViolations: QuotaFailure_Violation[];

  constructor(
    readonly code: Code,
    message: string,
    readonly cause: ConnectError,
  ) {
    super(message);
    this.name = "SmsgateError";
    const info = cause.findDetails(ErrorInfoSchema)[0];
    this.reason = info?.reason ?? "";
    this.metadata = info?.metadata ?? {};
    this.fieldViolations = cause.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations);
    this.quotaViolations = cause.findDetails(QuotaFailureSchema).flatMap((q) => q.violations);
    const delay = cause.findDetails(RetryInfoSchema)[0]?.retryDelay;
    this.retryAfterMs =
      delay === undefined ? undefined : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
  }

  /** The code's name as gRPC spells it, e.g. `INVALID_ARGUMENT`. */
  get codeName(): string {
    return Code[this.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  }

  /** Any error of a call, as an SmsgateError (Connect's error mapped at this edge). */
  static from(err: unknown): SmsgateError {
    if (err instanceof SmsgateError) return err;
    const cause = ConnectError.from(err);
    return new SmsgateError(cause.code, cause.rawMessage, cause);
  }
}

/** Codes after which a watch reconnects with its last token. */
const RESUMABLE = new Set([
  Code.Unavailable,
  Code.ResourceExhausted,
  Code.Internal,
  Code.Unknown,
  Code.DeadlineExceeded,
  Code.Aborted,
]);
const MAX_BACKOFF_MS = 5000;

async function mapErrors<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw SmsgateError.from(err);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * The reconnect loop of both watches: it opens a stream with `open` (which
 * reads the watch's last token) and yields what `each` makes of every item.
 * After a RESUMABLE error or a stream that ends it waits (the server's
 * RetryInfo delay, else full jitter growing while reconnects bring no item)
 * and opens another, counting it in `watch.reconnects`. An abort ends it;
 * other errors are thrown as SmsgateError. `each` runs inside the same `try`
 * as the stream, so what it throws is handled as the stream's errors are.
 */
async function* resumable<R, T>(
  watch: { reconnects: number },
  signal: AbortSignal | undefined,
  open: () => AsyncIterable<R>,
  each: (item: R) => Iterable<T>,
): AsyncGenerator<T, void, undefined> {
  let failures = 0;
  let retryAfterMs: number | undefined;
  while (!signal?.aborted) {
    try {
      for await (const item of open()) {
        failures = 0;
        yield* each(item);
      }
      // A stream the server ended (it should not) is reconnected as a cut one.
    } catch (err) {
      if (signal?.aborted) return;
      const error = SmsgateError.from(err);
      if (!RESUMABLE.has(error.code)) throw error;
      retryAfterMs = error.retryAfterMs;
    }
    const backoff = Math.min(MAX_BACKOFF_MS, 100 * 2 ** failures) * Math.random();
    failures += 1;
    await sleep(retryAfterMs ?? backoff, signal);
    retryAfterMs = undefined;
    watch.reconnects += 1;
  }
}

/**
 * A status stream that survives disconnects: iterate it for events; after an
 * UNAVAILABLE (a server restart, a cut connection) or a stream that ends, it
 * reconnects with the last event's token, so no event is lost or repeated.
 * `resumeToken` is that token, to persist and pass back in a later watch.
 */
export class StatusWatch implements AsyncIterable<StatusEvent> {
  resumeToken: string;
  /** Reconnections so far. */
  reconnects = 0;

  /** `onOpen` runs each time the server has the subscription (its response headers). */
  constructor(
    private readonly sms: Client<typeof SmsService>,
    private readonly filter: WatchFilter,
    private readonly signal?: AbortSignal,
    private readonly onOpen?: () => void,
  ) {
    this.resumeToken = filter.resumeToken ?? "";
  }

  async *[Symbol.asyncIterator](): AsyncIterator<StatusEvent> {
    yield* resumable(this, this.signal, () => this.events(), (event) => {
      this.resumeToken = event.resumeToken;
      return [event];
    });
  }

  /** One stream from the last token: its events (a response without one is no progress). */
  private async *events(): AsyncGenerator<StatusEvent> {
    const request = { ...this.filter, resumeToken: this.resumeToken };
    const options = { signal: this.signal, onHeader: this.onOpen };
    for await (const { event } of this.sms.watchStatus(request, options)) {
      if (event !== undefined) yield event;
    }
  }
}

/** The resume token saved in `path`; empty when there is none yet. */
function loadToken(path: string | undefined): string {
  return path && existsSync(path) ? readFileSync(path, "utf8").trim() : "";
}

/** Replaces the token in `path` atomically: a crash leaves the old or the new one. */
function saveToken(path: string, token: string): void {
  const partial = `${path}.partial`;
  writeFileSync(partial, token);
  renameSync(partial, path);
}

/**
 * The app's replies (mobile-originated SMS) as they arrive, for ever: after
 * an UNAVAILABLE (a server restart, a cut connection) or a stream that ends,
 * it reconnects after the last reply the caller finished with, so none is
 * missed or repeated. Other errors end it, among them OUT_OF_RANGE for a token
 * whose replies were dropped and INVALID_ARGUMENT for a token not of this app.
 * `resumeToken` is where it stands: the token of the last reply the caller
 * asked past (it comes again to a watch resumed before that).
 */
export class ReplyWatch implements AsyncIterable<Reply> {
  resumeToken: string;
  /** Reconnections so far. */
  reconnects = 0;
  private readonly tokenFile: string | undefined;
  private readonly signal: AbortSignal | undefined;

  constructor(
    private readonly inbound: Client<typeof InboundService>,
    options: ReplyWatchOptions = {},
  ) {
    this.tokenFile = options.tokenFile;
    this.signal = options.signal;
    this.resumeToken = options.resumeToken || loadToken(options.tokenFile);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Reply> {
    const open = () =>
      this.inbound.watchReplies({ resumeToken: this.resumeToken }, { signal: this.signal });
    yield* resumable(this, this.signal, open, (response) => this.take(response));
  }

  /** A response's reply, if any; once the caller asks past it, its token is kept (and saved). */
  private *take(response: WatchRepliesResponse): Generator<Reply> {
    // The first response only says where the stream starts.
    if (response.reply !== undefined) yield response.reply;
    // The caller asked for the next one: done with this reply.
    this.resumeToken = response.resumeToken;
    if (this.tokenFile) saveToken(this.tokenFile, this.resumeToken);
  }
}

/** A day as the server's usage dates are written: `YYYY-MM-DD`, in UTC for a Date. */
function usageDate(day: Date | string): string {
  return typeof day === "string" ? day : day.toISOString().slice(0, 10);
}

/** An smsgate client for one app. */
export class SmsgateClient {
  /** The generated client, with auth attached: every RPC of SmsService. */
  readonly sms: Client<typeof SmsService>;
  /** The same for InboundService (the app's replies). */
  readonly inbound: Client<typeof InboundService>;
  /** The same for UsageService. */
  readonly usage: Client<typeof UsageService>;

  constructor(options: ClientOptions) {
    const auth: Interceptor = (next) => (request) => {
      request.header.set("authorization", `Bearer ${options.token}`);
      return next(request);
    };
    const { target, tls } = options;
    const scheme = tls ? "https" : "http";
    const baseUrl = /^https?:\/\//.test(target) ? target : `${scheme}://${target}`;
    const { ca, cert, key, serverName } = typeof tls === "object" ? tls : ({} as TlsOptions);
    const nodeOptions = { ca, cert, key, servername: serverName };
    const transport = createGrpcTransport({ baseUrl, interceptors: [auth], nodeOptions });
    this.sms = createClient(SmsService, transport);
    this.inbound = createClient(InboundService, transport);
    this.usage = createClient(UsageService, transport);
  }

  /**
   * A client for SMSGATE_TARGET (default 127.0.0.1:50051) and SMSGATE_TOKEN;
   * TLS with SMSGATE_TLS=1 and the optional SMSGATE_TLS_CA_FILE,
   * SMSGATE_TLS_CLIENT_CERT_FILE, SMSGATE_TLS_CLIENT_KEY_FILE and
   * SMSGATE_TLS_SERVER_NAME (as the Python client reads them).
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env): SmsgateClient {
    const token = env.SMSGATE_TOKEN;
    if (!token) throw new Error("SMSGATE_TOKEN is not set: the app token, <app_key>.<app_secret>");
    const read = (name: string): Buffer | undefined => {
      const path = env[name];
      return path ? readFileSync(path) : undefined;
    };
    const tls = ["1", "true", "yes", "on"].includes((env.SMSGATE_TLS ?? "").toLowerCase())
      ? {
          ca: read("SMSGATE_TLS_CA_FILE"),
          cert: read("SMSGATE_TLS_CLIENT_CERT_FILE"),
          key: read("SMSGATE_TLS_CLIENT_KEY_FILE"),
          serverName: env.SMSGATE_TLS_SERVER_NAME || undefined,
        }
      : undefined;
    return new SmsgateClient({ target: env.SMSGATE_TARGET || "127.0.0.1:50051", token, tls });
  }

  /** Sends `text` to `phoneNumber`; retries with the same `requestId` are safe. */
  send(phoneNumber: string, text: string, options: SendOptions = {}): Promise<Message> {
    const request = create(SendSmsRequestSchema, {
      phoneNumber,
      content: { case: "text", value: text },
      requestId: options.requestId ?? crypto.randomUUID(),
      senderId: options.senderId ?? "",
      labels: options.labels ?? {},
      sendTime: options.sendTime && timestampFromDate(options.sendTime),
    });
    return mapErrors(async () => (await this.sms.sendSms(request)).message!);
  }

  /**
   * Sends `text` to each number: the batch is accepted recipient by recipient
   * (see each result's `messageId` or `error`); retries with the same
   * `requestId` are safe.
   */
  sendBatch(phoneNumbers: string[], text: string, options: SendOptions = {}): Promise<BatchSendResponse> {
    const request = create(BatchSendRequestSchema, {
      recipients: phoneNumbers.map((phoneNumber) => ({ phoneNumber })),
      content: { case: "text", value: text },
      requestId: options.requestId ?? crypto.randomUUID(),
      senderId: options.senderId ?? "",
      labels: options.labels ?? {},
      sendTime: options.sendTime && timestampFromDate(options.sendTime),
    });
    return mapErrors(() => this.sms.batchSend(request));
  }

  /** Every message matching `filter`, newest first, fetching page after page. */
  async *list(filter: ListFilter = {}): AsyncGenerator<Message> {
    let pageToken = "";
    do {
      const page = await mapErrors(() =>
        this.sms.listMessages({
          statuses: filter.statuses ?? [],
          phoneNumber: filter.phoneNumber ?? "",
          batchId: filter.batchId ?? "",
          startTime: filter.startTime && timestampFromDate(filter.startTime),
          endTime: filter.endTime && timestampFromDate(filter.endTime),
          pageSize: filter.pageSize ?? 0,
          pageToken,
        }),
      );
      yield* page.messages;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** Cancels a scheduled message not yet handed to a provider. */
  cancel(messageId: string): Promise<Message> {
    return mapErrors(async () => (await this.sms.cancelMessage({ messageId })).message!);
  }

  /** The message with its status history. */
  get(messageId: string): Promise<Message> {
    return mapErrors(async () => (await this.sms.getMessage({ messageId })).message!);
  }

  /** Status events matching `filter`, resumed across disconnects; stop it with `signal`. */
  watch(filter: WatchFilter = {}, signal?: AbortSignal): StatusWatch {
    return new StatusWatch(this.sms, filter, signal);
  }

  /**
   * The app's replies as they arrive, resumed across disconnects (see
   * ReplyWatch); with `tokenFile`, across restarts of the program too.
   */
  watchReplies(options: ReplyWatchOptions = {}): ReplyWatch {
    return new ReplyWatch(this.inbound, options);
  }

  /**
   * The app's messages, segments and cost per day (UTC) from `start` to `end`
   * (included; `start` alone: that one day), at most 93 days. A day is a
   * `YYYY-MM-DD` string or a Date (its UTC day).
   */
  getUsage(start: Date | string, end?: Date | string): Promise<GetUsageResponse> {
    const request = { startDate: usageDate(start), endDate: usageDate(end ?? start) };
    return mapErrors(() => this.usage.getUsage(request));
  }

  /**
   * Waits until the message is in one of `until` (default: terminal) and
   * returns it. It watches the message and reads it each time the server
   * confirms the subscription, so a status reached before the watch opened
   * (or while it reconnected) is not missed; then on each matching event.
   */
  waitFor(
    messageId: string,
    { until = TERMINAL, timeoutMs = 30_000 }: WaitOptions = {},
  ): Promise<Message> {
    const stop = new AbortController();
    let last: Message | undefined;
    return new Promise<Message>((resolve, reject) => {
      const read = (): void => {
        this.get(messageId).then(
          (message) => {
            last = message;
            if (until.has(message.status)) resolve(message);
          },
          // After UNAVAILABLE the watch reconnects, and reads again once open.
          (err: unknown) => RESUMABLE.has(SmsgateError.from(err).code) || reject(err),
        );
      };
      const timer = setTimeout(() => {
        const status = last === undefined ? "unread" : MessageStatus[last.status];
        reject(new Error(`message ${messageId} is still ${status} after ${timeoutMs} ms`));
      }, timeoutMs);
      stop.signal.addEventListener("abort", () => clearTimeout(timer));
      const watch = new StatusWatch(this.sms, { messageIds: [messageId] }, stop.signal, read);
      (async () => {
        for await (const event of watch) if (until.has(event.status)) read();
      })().catch(reject);
    }).finally(() => stop.abort());
  }
}
