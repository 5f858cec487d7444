// {{name}}: an acquirer dialect for the "DEMO" line protocol, in JavaScript.
//
// Replace the protocol with your acquirer's; keep the rules each function states, which
// `selfvend plugin test` checks. The DEMO protocol: one request per TCP connection. The kiosk
// sends one line and the acquirer answers one line, each UTF-8 text ending in "\n", its fields
// separated by "|". Every line but the sign-on's ends in `|MAC`: 16 hex digits, the MAC of the
// line's bytes before that "|", made by the PIN pad (`security.mac`) under the MAC key the last
// sign-on delivered.
//
//   SIGNON|terminal|merchant|stan|batch
//       -> OK|stan|PIN key|its check|MAC key|its check  (hex; keys under the master key)
//   SALE|terminal|merchant|stan|batch|fen|PAN|expiry|Track 2 hex|PIN block hex or empty|MAC
//       -> APPROVED|stan|RRN|auth code|fen|MMDDhhmmss|MAC, or DECLINED|stan|code|message|MAC
//   REVERSAL|terminal|merchant|stan|batch|fen|PAN|expiry|Track 2 hex|NO-ANSWER or CANCELLED|MAC
//       -> OK|stan|MAC
//   SETTLE|terminal|merchant|stan|batch|count|fen|MAC   -> OK|stan|count|fen|MAC
//
// Any request may get `NO|stan|message|MAC` instead: the acquirer did nothing (a MAC error,
// sign on first). `stan` in a reply repeats the request's. Money is in fen.
//
// Card data never reaches the log: no PAN, no Track 2, no PIN block, however short.
//
// WIT types in JavaScript: record fields are camelCase (`amountFen`, `pinBlock`); enums are
// their WIT names as strings ("insufficient-funds", "no-answer"); `option` is the value or
// `undefined`; `list<u8>` is a Uint8Array; u64 is a BigInt on the way in and may be a Number or
// BigInt on the way out; variants are `{ tag, val }`. Errors: an imported function's `result`
// error is thrown as an Error whose `payload` is the variant; a `result` you return is a variant
// you throw, `{ tag, val }` of the function's own error type. Anything else thrown traps the
// instance, which the kiosk treats as a broken plugin.

import { Connection } from "selfvend:backend/connection@1.0.0";
import { log } from "selfvend:backend/log@1.0.0";
import { mac } from "selfvend:payment/security@1.0.0";

// The longest reply line read; a longer one is malformed.
const MAX_REPLY = 1024;
// The longest text the kiosk takes in an error or a decline, in UTF-8 bytes.
const MAX_TEXT = 256;

const DECLINE_CODES = {
  51: "insufficient-funds",
  55: "wrong-pin",
  75: "pin-tries-exceeded",
  41: "card-blocked",
  43: "card-blocked",
  62: "card-blocked",
  14: "invalid-card",
  54: "expired-card",
};

/** `text` as the kiosk takes it: control characters as spaces, cut to MAX_TEXT bytes. A longer
 * or stranger text would make the kiosk take the answer as the plugin's failure. */
function fit(text) {
  let out = "";
  let size = 0;
  for (const c of text) {
    const bytes = new TextEncoder().encode(c).length;
    if (size + bytes > MAX_TEXT - 3) return out + "\u2026";
    out += /[\u0000-\u001f\u007f-\u009f]/.test(c) ? " " : c;
    size += bytes;
  }
  return out;
}

/** A value quoted in an error: at most its first 32 characters. */
function quote(value) {
  const chars = Array.from(value);
  return JSON.stringify(chars.slice(0, 32).join("")) + (chars.length > 32 ? "\u2026" : "");
}

/** A lookup by a key the acquirer sent: only the table's own entries, never Object's. */
function lookup(table, key) {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/** An acquirer-error: the only thing a dialect function may throw. Its text is fitted to what
 * the kiosk takes. */
function acquirerError(tag, val) {
  return { tag, val: fit(val) };
}

function malformed(text) {
  return acquirerError("malformed-reply", text);
}

/** A reply's kind as far as the log and errors show it: the acquirer's, but unchecked. */
function short(kind) {
  return kind.slice(0, 16);
}

/** The fields of a reply after its first, read in order, each checked and named in any error. */
class Fields {
  constructor(command, fields) {
    this.command = command;
    this.fields = fields;
    this.next = 0;
  }

  bad(name, what) {
    return malformed(`${this.command} reply, field ${this.next} (${name}): ${what}`);
  }

  text(name) {
    this.next += 1;
    if (this.next > this.fields.length) throw this.bad(name, "missing");
    return this.fields[this.next - 1];
  }

  /** Text the kiosk keeps as a reference: not empty, at most 64 bytes. */
  id(name) {
    const value = this.text(name);
    const bytes = new TextEncoder().encode(value).length;
    if (bytes === 0) throw this.bad(name, "empty");
    if (bytes > 64) throw this.bad(name, `${bytes} bytes, over 64`);
    return value;
  }

  /** The acquirer's local time, MMDDhhmmss. */
  time(name) {
    const value = this.text(name);
    if (!/^[0-9]{10}$/.test(value)) throw this.bad(name, `${quote(value)} is not MMDDhhmmss`);
    return value;
  }

  /** A number as a BigInt: u64 does not fit a Number. */
  number(name, limit = (1n << 64n) - 1n) {
    const value = this.text(name);
    // Digits only: BigInt() would take spaces, signs and "0x".
    if (!/^[0-9]+$/.test(value)) throw this.bad(name, `${quote(value)} is not a number`);
    if (BigInt(value) > limit) throw this.bad(name, `${quote(value)} is over ${limit}`);
    return BigInt(value);
  }

  hex(name, length) {
    const value = this.text(name);
    if (!new RegExp(`^[0-9A-Fa-f]{${2 * length}}$`).test(value)) {
      throw this.bad(name, `${quote(value)} is not ${length} bytes of hex`);
    }
    return Uint8Array.from(value.match(/../g), (p) => parseInt(p, 16));
  }

  /** The reply's STAN, which must be the request's: a reply to another request says nothing of
   * this one. */
  stan(stan) {
    const theirs = this.number("stan");
    if (theirs !== BigInt(stan)) throw this.bad("stan", `${theirs}, where ${stan} was sent`);
  }

  /** The reply must end here: more fields is a protocol this dialect does not know. */
  end() {
    if (this.fields.length !== this.next) {
      throw malformed(`${this.command} reply: ${this.fields.length} fields where ${this.next} were expected`);
    }
  }
}

function hex(bytes) {
  return Array.from(bytes ?? [], (b) => b.toString(16).toUpperCase().padStart(2, "0")).join("");
}

/** A request line's text before its MAC, from [name, value] pairs. A field holding "|" or a line
 * break could not be sent as itself, so the request is not sent at all; the error names the
 * field, never its value, which may be card data. */
function line(command, fields) {
  for (const [name, value] of fields) {
    if (/[|\r\n]/.test(value)) {
      throw acquirerError("unreachable", `${command}: not sent: the ${name} holds a "|" or a line break`);
    }
  }
  return [command, ...fields.map(([, value]) => value)].join("|");
}

/** The PIN pad's MAC of `text`, in hex; a failure is the error `tag`. */
function macOf(command, text, tag) {
  try {
    return hex(mac(new TextEncoder().encode(text)));
  } catch (e) {
    throw acquirerError(tag, `${command}: the PIN pad could not MAC: ${(e.payload ?? e).toString()}`);
  }
}

function net(command, doing, e) {
  const error = e.payload ?? e;
  const why =
    {
      timeout: "timed out",
      closed: "the acquirer closed the connection",
      "connect-failed": `could not connect: ${error.val}`,
      "too-large": "over the byte cap",
    }[error.tag] ?? String(error.val ?? error);
  return `${command}: ${doing}: ${why}`;
}

/** Sends `request` and reads one reply line, without its end of line. Until the request is sent,
 * a failure is `unreachable`; after it, the acquirer may have acted, so a failure is
 * `outcome-unknown` (and a purchase is reversed). */
function exchange(command, request) {
  let conn;
  try {
    conn = Connection.open();
  } catch (e) {
    throw acquirerError("unreachable", net(command, "connecting", e));
  }
  let reply;
  try {
    reply = sendAndReceive(command, conn, new TextEncoder().encode(request + "\n"));
  } finally {
    // Closes the connection now, not when the garbage collector gets to it.
    conn[Symbol.dispose]();
  }
  const end = reply.indexOf(0x0a);
  if (end + 1 !== reply.length) throw malformed(`${command} reply: ${reply.length - end - 1} bytes after its end of line`);
  try {
    // ignoreBOM: a byte-order mark is not part of the protocol, and is kept to fail as such.
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(reply.subarray(0, end));
  } catch {
    throw malformed(`${command} reply: not UTF-8`);
  }
}

/** Sends the request on `conn` and reads the reply up to its end of line. */
function sendAndReceive(command, conn, request) {
  try {
    conn.send(request);
  } catch (e) {
    throw acquirerError("outcome-unknown", net(command, "sending", e));
  }
  let reply = new Uint8Array(0);
  while (!reply.includes(0x0a)) {
    if (reply.length >= MAX_REPLY) throw malformed(`${command} reply: no end of line in its first ${MAX_REPLY} bytes`);
    let chunk;
    try {
      chunk = conn.receive(MAX_REPLY - reply.length);
    } catch (e) {
      throw acquirerError("outcome-unknown", net(command, "waiting for the reply", e));
    }
    if (chunk.length === 0) {
      throw acquirerError(
        "outcome-unknown",
        `${command}: the acquirer closed the connection after ${reply.length} bytes, before the reply's end of line`,
      );
    }
    const joined = new Uint8Array(reply.length + chunk.length);
    joined.set(reply);
    joined.set(chunk, reply.length);
    reply = joined;
  }
  return reply;
}

/** Sends a MAC'd request and returns the reply's kind and fields once its MAC verifies. A reply
 * whose MAC does not verify may not be the acquirer's: its outcome is unknown. */
function call(command, stan, fields) {
  const text = line(command, fields);
  const reply = exchange(command, `${text}|${macOf(command, text, "security")}`);
  const cut = reply.lastIndexOf("|");
  if (cut < 0) throw malformed(`${command} reply: no MAC`);
  const body = reply.slice(0, cut);
  const theirs = reply.slice(cut + 1);
  if (!/^[0-9A-Fa-f]{16}$/.test(theirs) || theirs.toUpperCase() !== macOf(command, body, "outcome-unknown")) {
    throw acquirerError("outcome-unknown", `${command}: the reply's MAC does not verify`);
  }
  const [kind, ...rest] = body.split("|");
  const f = new Fields(command, rest);
  // The kind only: a reply carries card data.
  log("info", `${command} stan ${stan}: ${short(kind)}`);
  if (kind === "NO") {
    f.stan(stan);
    const message = f.text("message");
    f.end();
    throw acquirerError("refused", message);
  }
  return [kind, f];
}

function cardFields(card) {
  return [
    ["card number", card.pan],
    ["expiry", card.expiry],
    ["Track 2", hex(card.track2)],
  ];
}

function terminalFields(t) {
  return [
    ["terminal id", t.terminalId],
    ["merchant id", t.merchantId],
  ];
}

export const dialect = {
  about() {
    return { vendor: "Your Acquirer Software Company", name: "{{name}}", version: "0.1.0" };
  },

  /** Not MAC'd: the keys it fetches are what MACs are made with. They come encrypted under the
   * PIN pad's master key; the pad checks each against its check value as it loads it. */
  signOn(request) {
    const fields = [...terminalFields(request.terminal), ["stan", String(request.stan)], ["batch", String(request.batch)]];
    const reply = exchange("SIGNON", line("SIGNON", fields));
    const [kind, ...rest] = reply.split("|");
    const f = new Fields("SIGNON", rest);
    log("info", `SIGNON stan ${request.stan}: ${short(kind)}`);
    if (kind === "NO") {
      f.stan(request.stan);
      const message = f.text("message");
      f.end();
      throw acquirerError("refused", message);
    }
    if (kind !== "OK") throw malformed(`SIGNON reply: starts ${JSON.stringify(short(kind))}, not OK or NO`);
    // The STAN, so that an old sign-on's reply cannot bring back old keys.
    f.stan(request.stan);
    const keys = {
      pinKey: f.hex("PIN key", 16),
      pinKeyCheck: f.hex("PIN key check", 4),
      macKey: f.hex("MAC key", 16),
      macKeyCheck: f.hex("MAC key check", 4),
    };
    f.end();
    return keys;
  },

  /** Changes state: the acquirer debits the card. */
  purchase(request) {
    const fields = [
      ...terminalFields(request.terminal),
      ["stan", String(request.stan)],
      ["batch", String(request.batch)],
      ["amount", String(request.amountFen)],
      ...cardFields(request.card),
      ["PIN block", hex(request.pinBlock)],
    ];
    const [kind, f] = call("SALE", request.stan, fields);
    let outcome;
    if (kind === "APPROVED") {
      f.stan(request.stan);
      outcome = {
        tag: "approved",
        val: { rrn: f.id("RRN"), authCode: f.id("auth code"), amountFen: f.number("amount"), acquirerTime: f.time("time") },
      };
    } else if (kind === "DECLINED") {
      f.stan(request.stan);
      const responseCode = f.id("response code");
      outcome = {
        tag: "declined",
        val: { code: lookup(DECLINE_CODES, responseCode) ?? "other", responseCode, message: fit(f.text("message")) },
      };
    } else {
      throw malformed(`SALE reply: starts ${JSON.stringify(short(kind))}, not APPROVED, DECLINED or NO`);
    }
    f.end();
    return outcome;
  },

  /** Changes state: the acquirer undoes the purchase. The kiosk sends it until it is
   * acknowledged, so the acquirer must take a repeat as the same reversal. */
  reversal(request) {
    const fields = [
      ...terminalFields(request.terminal),
      ["stan", String(request.stan)],
      ["batch", String(request.batch)],
      ["amount", String(request.amountFen)],
      ...cardFields(request.card),
      ["reason", request.reason === "no-answer" ? "NO-ANSWER" : "CANCELLED"],
    ];
    const [kind, f] = call("REVERSAL", request.stan, fields);
    if (kind !== "OK") throw malformed(`REVERSAL reply: starts ${JSON.stringify(short(kind))}, not OK or NO`);
    f.stan(request.stan);
    f.end();
  },

  /** Changes state: the acquirer closes the batch. */
  settle(request) {
    const fields = [
      ...terminalFields(request.terminal),
      ["stan", String(request.stan)],
      ["batch", String(request.batch)],
      ["count", String(request.count)],
      ["amount", String(request.amountFen)],
    ];
    const [kind, f] = call("SETTLE", request.stan, fields);
    if (kind !== "OK") throw malformed(`SETTLE reply: starts ${JSON.stringify(short(kind))}, not OK or NO`);
    f.stan(request.stan);
    const acquirerCount = Number(f.number("count", 0xffffffffn));
    const acquirerAmountFen = f.number("amount");
    f.end();
    return {
      balanced: acquirerCount === request.count && acquirerAmountFen === BigInt(request.amountFen),
      acquirerCount,
      acquirerAmountFen,
    };
  },
};
