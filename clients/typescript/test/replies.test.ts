/**
 * watchReplies against a live smsgate whose Tencent account sends replies to
 * the app of SMSGATE_TOKEN: the test posts replies in Tencent's callback
 * format to SMSGATE_TEST_INBOUND_URL (tests/test_typescript.py sets both up
 * and runs this file alone).
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { Code, type Reply, SmsgateClient, SmsgateError } from "../src/index.js";

const client = SmsgateClient.fromEnv();
const INBOUND_URL = process.env.SMSGATE_TEST_INBOUND_URL ?? "";

async function reply(text: string): Promise<void> {
  const body = { nationcode: "86", mobile: "13800138000", text, time: 1457336869 };
  const response = await fetch(INBOUND_URL, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(response.status, 200, await response.text());
}

async function next(replies: AsyncIterator<Reply>, what: string): Promise<Reply> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up after 10 s waiting for ${what}`)), 10_000);
  });
  try {
    const result = await Promise.race([replies.next(), timeout]);
    assert.ok(!result.done, `the watch ended before ${what}`);
    return result.value;
  } finally {
    clearTimeout(timer);
  }
}

async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`gave up after 10 s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("watchReplies follows replies and resumes from its token file", async () => {
  const tokenFile = join(mkdtempSync(join(tmpdir(), "smsgate-replies-")), "replies.token");
  const stop = new AbortController();
  try {
    const replies = client.watchReplies({ tokenFile, signal: stop.signal })[Symbol.asyncIterator]();
    const first = next(replies, "c0");
    // The start token is saved once the stream is live: a reply from now on is seen.
    await until(() => existsSync(tokenFile), "the start token saved");
    await reply("c0");
    const c0 = await first;
    assert.deepEqual([c0.text, c0.phoneNumber, c0.optedOut], ["c0", "+8613800138000", false]);
    await reply("c1");
    await reply("c2");
    // Asking for c1 saves c0's token: c0 is done with, c1 not yet.
    assert.equal((await next(replies, "c1")).text, "c1");
    await replies.return?.();

    const again = client.watchReplies({ tokenFile, signal: stop.signal })[Symbol.asyncIterator]();
    assert.deepEqual([(await next(again, "c1")).text, (await next(again, "c2")).text], ["c1", "c2"]);
    await again.return?.();
  } finally {
    stop.abort();
  }
});

test("a STOP reply arrives marked opted out", async () => {
  const stop = new AbortController();
  try {
    const watch = client.watchReplies({ signal: stop.signal });
    const replies = watch[Symbol.asyncIterator]();
    const first = next(replies, "the STOP reply");
    await until(() => watch.resumeToken !== "", "the watch to open");
    await reply("STOP");
    const got = await first;
    assert.deepEqual([got.text, got.optedOut], ["STOP", true]);
  } finally {
    stop.abort();
  }
});

test("a token not of a reply watch is INVALID_ARGUMENT naming resume_token", async () => {
  const watch = client.watchReplies({ resumeToken: "forged" })[Symbol.asyncIterator]();
  const error = await watch.next().catch((err: unknown) => err);
  assert.ok(error instanceof SmsgateError, `not an SmsgateError: ${String(error)}`);
  assert.equal(error.code, Code.InvalidArgument);
  assert.equal(error.reason, "INVALID_RESUME_TOKEN");
  assert.deepEqual(
    error.fieldViolations.map((v) => v.field),
    ["resume_token"],
  );
});
