/**
 * The TypeScript client against a live smsgate: SMSGATE_TARGET and
 * SMSGATE_TOKEN name it (tests/test_typescript.py starts one and runs this).
 * With SMSGATE_TEST_CONTROL, a directory, the watch test asks for a server
 * restart by creating `restart` there and waits for `restarted`.
 */
import assert from "node:assert/strict";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { Code, MessageStatus, SmsgateClient, SmsgateError, type StatusEvent } from "../src/index.js";

const client = SmsgateClient.fromEnv();
const PHONE = "+14155550123";

async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function restartServer(control: string): Promise<void> {
  writeFileSync(join(control, "restart"), "");
  const deadline = Date.now() + 60_000;
  while (!existsSync(join(control, "restarted"))) {
    if (Date.now() > deadline) throw new Error("the server was not restarted within 60 s");
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("send accepts a message and waitFor sees it delivered", async () => {
  const sent = await client.send(PHONE, "Your order has shipped", { labels: { order: "42" } });
  assert.match(sent.id, /^[0-9a-z]+$/);
  assert.equal(sent.status, MessageStatus.QUEUED);
  assert.equal(sent.phoneNumber, PHONE);

  const done = await client.waitFor(sent.id, { timeoutMs: 10_000 });

  assert.equal(done.status, MessageStatus.DELIVERED);
  assert.deepEqual(
    done.history.map((change) => change.status),
    [MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED],
  );
});

test("waitFor returns a message delivered before its watch opened", async () => {
  const sent = await client.send(PHONE, "fast");
  while ((await client.get(sent.id)).status !== MessageStatus.DELIVERED) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const done = await within(5000, "waitFor", client.waitFor(sent.id));
  assert.equal(done.status, MessageStatus.DELIVERED);
});

test("waitFor follows a scheduled message to the status asked for", async () => {
  const sent = await client.send(PHONE, "later", { sendTime: new Date(Date.now() + 800) });
  assert.equal(sent.status, MessageStatus.SCHEDULED);
  const until = new Set([MessageStatus.SENT, MessageStatus.DELIVERED]);
  const reached = await client.waitFor(sent.id, { until, timeoutMs: 10_000 });
  assert.ok(until.has(reached.status), MessageStatus[reached.status]);
});

test("waitFor gives up after its timeout, naming the last status", async () => {
  const sent = await client.send(PHONE, "much later", { sendTime: new Date(Date.now() + 3_600_000) });
  await assert.rejects(client.waitFor(sent.id, { timeoutMs: 300 }), /is still SCHEDULED after 300 ms/);
  await client.cancel(sent.id);
});

test("a retry with the same requestId returns the first message", async () => {
  const first = await client.send(PHONE, "once", { requestId: "ts-retry-1" });
  const again = await client.send(PHONE, "once", { requestId: "ts-retry-1" });
  assert.equal(again.id, first.id);
});

test("a batch is accepted recipient by recipient, and listed page by page", async () => {
  const batch = await client.sendBatch([PHONE, "+14155550124", "bad", "+14155550125"], "batch");
  assert.equal(batch.acceptedCount, 3);
  assert.equal(batch.rejectedCount, 1);
  const rejected = batch.results.find((r) => r.result.case === "error");
  assert.equal(rejected?.index, 2);
  assert.equal(rejected?.result.case === "error" && rejected.result.value.reason, "INVALID_PHONE_NUMBER");

  const listed = [];
  for await (const message of client.list({ batchId: batch.batchId, pageSize: 2 })) listed.push(message.id);

  const accepted = batch.results.flatMap((r) => (r.result.case === "messageId" ? [r.result.value] : []));
  assert.deepEqual([...listed].sort(), [...accepted].sort());
});

test("cancel stops a scheduled message; an unknown id is NOT_FOUND with a reason", async () => {
  const sent = await client.send(PHONE, "tomorrow", { sendTime: new Date(Date.now() + 86_400_000) });
  assert.equal((await client.cancel(sent.id)).status, MessageStatus.CANCELED);
  const error = await client.cancel("0123456789abcdef0123456789").catch((err: unknown) => err);
  assert.ok(error instanceof SmsgateError);
  assert.equal(error.code, Code.NotFound);
  assert.ok(error.reason.length > 0);
});

test("an invalid phone number is INVALID_ARGUMENT with its reason and field violation", async () => {
  const error = await client.send("not a number", "hi").then(
    () => assert.fail("the send was accepted"),
    (err: unknown) => err,
  );

  assert.ok(error instanceof SmsgateError, `not an SmsgateError: ${String(error)}`);
  assert.equal(error.code, Code.InvalidArgument);
  assert.equal(error.codeName, "INVALID_ARGUMENT");
  assert.equal(error.reason, "INVALID_PHONE_NUMBER");
  assert.deepEqual(
    error.fieldViolations.map((v) => v.field),
    ["phone_number"],
  );
  assert.ok(error.fieldViolations[0].description.length > 0);
});

test("several bad fields come back as one violation each", async () => {
  const error = await client.send("nope", " ").catch((err: unknown) => err);
  assert.ok(error instanceof SmsgateError);
  assert.deepEqual(error.fieldViolations.map((v) => v.field).sort(), ["phone_number", "text"]);
});

test("getUsage counts today's delivered messages; a bad day names its field", async () => {
  const sent = await client.send(PHONE, "counted");
  await client.waitFor(sent.id, { timeoutMs: 10_000 });
  const today = new Date().toISOString().slice(0, 10);

  const usage = await client.getUsage(new Date());

  const delivered = usage.rows.filter((r) => r.status === MessageStatus.DELIVERED);
  assert.ok(delivered.length > 0, `no DELIVERED row in ${JSON.stringify(usage.rows.map((r) => r.status))}`);
  assert.ok(delivered.every((r) => r.date === today && r.messages >= 1n));
  const error = await client.getUsage(today, "1999-01-01").catch((err: unknown) => err);
  assert.ok(error instanceof SmsgateError);
  assert.equal(error.code, Code.InvalidArgument);
  assert.deepEqual(
    error.fieldViolations.map((v) => v.field),
    ["end_date"],
  );
});

test("a wrong token is UNAUTHENTICATED with reason INVALID_CREDENTIALS", async () => {
  const stranger = new SmsgateClient({ target: process.env.SMSGATE_TARGET!, token: "wrong" });
  const error = await stranger.send(PHONE, "hi").catch((err: unknown) => err);
  assert.ok(error instanceof SmsgateError);
  assert.equal(error.code, Code.Unauthenticated);
  assert.equal(error.reason, "INVALID_CREDENTIALS");
});

test("a watch resumes from its last token: every event once, in order", async (t) => {
  const control = process.env.SMSGATE_TEST_CONTROL;
  if (!control) {
    t.skip("SMSGATE_TEST_CONTROL is not set: nobody to restart the server");
    return;
  }
  const stop = new AbortController();
  try {
    await watchAcrossARestart(control, stop.signal);
  } finally {
    stop.abort();
  }
});

async function watchAcrossARestart(control: string, signal: AbortSignal): Promise<void> {
  const watch = client.watch({}, signal);
  const events = watch[Symbol.asyncIterator]();
  const seen: StatusEvent[] = [];
  const next = async (): Promise<StatusEvent> => {
    const result = await events.next();
    assert.ok(!result.done, "the watch ended");
    seen.push(result.value);
    return result.value;
  };

  // The watch opens on its first next(); it is live once it sees an event.
  const first = next();
  const probing = setInterval(() => void client.send(PHONE, "probe").catch(() => undefined), 100);
  try {
    await within(10_000, "a first event of the probes", first);
  } finally {
    clearInterval(probing);
  }

  // Scheduled a second ahead: their events happen while the watch is cut.
  const sendTime = new Date(Date.now() + 1000);
  const before = [
    await client.send(PHONE, "before 1", { sendTime }),
    await client.send(PHONE, "before 2", { sendTime }),
  ];
  await restartServer(control);
  const after = await client.send(PHONE, "after the restart");
  const wanted = [...before, after].map((m) => m.id);

  const delivered = (): boolean =>
    wanted.every((id) => seen.some((e) => e.messageId === id && e.status === MessageStatus.DELIVERED));
  while (!delivered()) {
    const last = seen.at(-1);
    const lastSeen = last ? `${last.messageId} ${MessageStatus[last.status]}` : "nothing";
    await within(20_000, `delivery of ${wanted.join(", ")}; last saw ${lastSeen}`, next());
  }

  assert.ok(watch.reconnects >= 1, "the watch never reconnected");
  const tokens = seen.map((e) => e.resumeToken);
  assert.equal(new Set(tokens).size, tokens.length, "an event came twice");
  for (const id of wanted) {
    const message = await client.get(id);
    assert.deepEqual(
      seen.filter((e) => e.messageId === id).map((e) => MessageStatus[e.status]),
      message.history.map((change) => MessageStatus[change.status]),
      `events of ${id} differ from its history`,
    );
  }
}
