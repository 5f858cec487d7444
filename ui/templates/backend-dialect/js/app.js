// {{name}}: a backend dialect for the "DEMO" line protocol, in JavaScript.
//
// Replace the protocol with your backend's; keep the rules each function states, which
// `selfvend plugin test` checks. The DEMO protocol: one request per TCP connection. The kiosk
// sends one line and the backend answers one line, each UTF-8 text ending in "\n", its fields
// separated by "|". A request is a command and its fields; a reply is `OK|fields…`, `NONE`
// (no such sale), or `NO|code|message` (a refusal, its code one of ACCOUNT-CLOSED, ARREARS,
// CREDIT-NOT-TAKEN, OVER-LIMIT, UNKNOWN-CARD, CARD-MISMATCH, OTHER).
//
//   PING                                         -> OK
//   ACCOUNT|serial|utility|customer|meter|count  -> OK|customer|name|address|meter|serial|
//                                                   A, C or S|count|fen per kWh|arrears fen
//   CANBUY|serial|customer|count|M or E|value    -> OK|min fen|max fen, or NO|code|message
//   SALE|terminal|kiosk serial|serial|customer|count|M or E|value|CASH or CARD|paid fen
//                                                -> OK|kiosk serial|sale id|count|fen|Wh|token hex
//   STATUS|terminal|kiosk serial                 -> as SALE, or NONE
//   CONFIRM|terminal|kiosk serial|serial|Y or N|return data hex  -> OK
//   PSC|serial|customer                          -> OK|PSC hex
//   RECON|terminal|period|opened|closed|then count|fen for cash sales, bank-card sales and
//        cash bill payments                      -> OK|the backend's six figures
//
// "M" buys money in fen, "E" energy in Wh. Contract 1.1's billing calls, and `authenticate`
// (CPU cards), are `not-supported`: the kiosk then prices from the account.
//
// WIT types in JavaScript: record fields are camelCase (`cardSerial`, `amountFen`); enums are
// their WIT names as strings ("active", "cash-sale"); `option` is the value or `undefined`;
// `list<u8>` is a Uint8Array; u64 is a BigInt on the way in and may be a Number or BigInt on the
// way out; variants are `{ tag, val }`. Errors: an imported function's `result` error is thrown
// as an Error whose `payload` is the variant; a `result` you return is a variant you throw,
// `{ tag, val }` of the function's own error type. Anything else thrown traps the instance,
// which the kiosk treats as a broken plugin.

import { Connection } from "selfvend:backend/connection@1.1.0";
import { log } from "selfvend:backend/log@1.1.0";

// The longest reply line read; a longer one is malformed.
const MAX_REPLY = 4096;
// The longest text the kiosk takes in an error or a refusal, in UTF-8 bytes.
const MAX_TEXT = 512;

const REFUSAL_CODES = {
  "ACCOUNT-CLOSED": "account-closed",
  ARREARS: "arrears",
  "CREDIT-NOT-TAKEN": "credit-not-taken",
  "OVER-LIMIT": "over-limit",
  "UNKNOWN-CARD": "unknown-card",
  "CARD-MISMATCH": "card-mismatch",
};

const STATUSES = { A: "active", C: "closed", S: "suspended" };

// The three business types a period reports, in the order RECON carries them.
const BUSINESSES = [
  ["cash-sale", "cash sales"],
  ["bank-card-sale", "bank-card sales"],
  ["cash-bill-payment", "cash bill payments"],
];

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

/** A lookup by a key the backend sent: only the table's own entries, never Object's. */
function lookup(table, key) {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/** A backend-error: the only thing a dialect function may throw. Its text is fitted to what the
 * kiosk takes. */
function backendError(tag, val) {
  if (val === undefined) return { tag };
  if (tag === "refused") return { tag, val: { ...val, message: fit(val.message) } };
  return { tag, val: fit(val) };
}

function malformed(text) {
  return backendError("malformed-reply", text);
}

/** The fields of an OK reply, read in order, each checked and named in any error. */
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

  /** Text the kiosk keeps as an id: not empty, at most 64 bytes. */
  id(name) {
    const value = this.text(name);
    const bytes = new TextEncoder().encode(value).length;
    if (bytes === 0) throw this.bad(name, "empty");
    if (bytes > 64) throw this.bad(name, `${bytes} bytes, over 64`);
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

  number32(name) {
    return Number(this.number(name, 0xffffffffn));
  }

  /** A number the reply repeats from the request: a reply to another request says nothing of
   * this one. */
  echo(name, sent) {
    const theirs = this.number(name);
    if (theirs !== BigInt(sent)) throw this.bad(name, `${theirs}, where ${sent} was sent`);
  }

  hex(name) {
    const value = this.text(name);
    // Not quoted: the field may be a PSC.
    if (!/^([0-9A-Fa-f]{2})*$/.test(value)) throw this.bad(name, `${Array.from(value).length} characters that are not hex`);
    return Uint8Array.from(value.match(/../g) ?? [], (p) => parseInt(p, 16));
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

/** A request line. A field holding "|" or a line break could not be sent as itself, so the
 * request is not sent at all. */
function line(command, fields) {
  for (const field of fields) {
    if (/[|\r\n]/.test(field)) {
      throw backendError("unreachable", `${command}: not sent: the field ${quote(field)} holds a "|" or a line break`);
    }
  }
  return [command, ...fields].join("|") + "\n";
}

function net(command, doing, e) {
  const error = e.payload ?? e;
  const why =
    {
      timeout: "timed out",
      closed: "the backend closed the connection",
      "connect-failed": `could not connect: ${error.val}`,
      "too-large": "over the byte cap",
    }[error.tag] ?? String(error.val ?? error);
  return `${command}: ${doing}: ${why}`;
}

/** Sends one request line and reads one reply line: ["OK", Fields], ["NONE"] or ["NO", refusal].
 * Until the request is sent, a failure is `unreachable`: the backend cannot have acted. After
 * it, the backend may have acted, so a failure is `outcome-unknown`; the kiosk then asks with
 * STATUS. */
function exchange(command, fields) {
  const request = new TextEncoder().encode(line(command, fields));
  let conn;
  try {
    conn = Connection.open();
  } catch (e) {
    throw backendError("unreachable", net(command, "connecting", e));
  }
  const reply = sendAndReceive(command, conn, request);
  const end = reply.indexOf(0x0a);
  if (end + 1 !== reply.length) throw malformed(`${command} reply: ${reply.length - end - 1} bytes after its end of line`);
  let text;
  try {
    // ignoreBOM: a byte-order mark is not part of the protocol, and is kept to fail as such.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(reply.subarray(0, end));
  } catch {
    throw malformed(`${command} reply: not UTF-8`);
  }
  const [head, ...rest] = text.split("|");
  let answer;
  if (head === "OK") {
    answer = ["OK", new Fields(command, rest)];
  } else if (head === "NONE" && rest.length === 0) {
    answer = ["NONE"];
  } else if (head === "NO") {
    const f = new Fields(command, rest);
    const code = f.text("refusal code");
    const message = f.text("refusal message");
    f.end();
    // A code this dialect does not know is still a refusal, in the backend's words.
    answer = ["NO", { code: lookup(REFUSAL_CODES, code) ?? "other", message: fit(message) }];
  } else {
    // Not quoted: the line may hold a PSC.
    throw malformed(`${command} reply: its first field (${Array.from(head).length} characters) is not OK, NONE or NO`);
  }
  // The outcome only: a PSC reply carries key material.
  log("debug", `${command}: ${answer[0]}`);
  return answer;
}

/** Sends the request on `conn` and reads the reply up to its end of line; closes `conn`. */
function sendAndReceive(command, conn, request) {
  try {
    try {
      conn.send(request);
    } catch (e) {
      throw backendError("outcome-unknown", net(command, "sending", e));
    }
    let reply = new Uint8Array(0);
    while (!reply.includes(0x0a)) {
      if (reply.length >= MAX_REPLY) throw malformed(`${command} reply: no end of line in its first ${MAX_REPLY} bytes`);
      let chunk;
      try {
        chunk = conn.receive(MAX_REPLY - reply.length);
      } catch (e) {
        throw backendError("outcome-unknown", net(command, "waiting for the reply", e));
      }
      if (chunk.length === 0) {
        throw backendError(
          "outcome-unknown",
          `${command}: the backend closed the connection after ${reply.length} bytes, before the reply's end of line`,
        );
      }
      const joined = new Uint8Array(reply.length + chunk.length);
      joined.set(reply);
      joined.set(chunk, reply.length);
      reply = joined;
    }
    return reply;
  } finally {
    // Closes the connection now, not when the garbage collector gets to it.
    conn[Symbol.dispose]();
  }
}

/** An OK reply's fields; a refusal is `refused`, anything else malformed. */
function ok(command, fields) {
  const [kind, value] = exchange(command, fields);
  if (kind === "NO") throw backendError("refused", value);
  if (kind === "NONE") throw malformed(`${command} reply: NONE, where OK or NO was expected`);
  return value;
}

function purchase(p) {
  return [p.tag === "money" ? "M" : "E", String(p.val)];
}

/** A SALE or STATUS reply's grant, for the sale with this kiosk serial. */
function grant(f, kioskSerial) {
  f.echo("kiosk serial", kioskSerial);
  const g = {
    backendSaleId: f.id("sale id"),
    purchaseCount: f.number32("purchase count"),
    amountFen: f.number("amount"),
    energyWh: f.number("energy"),
    token: f.hex("token"),
  };
  f.end();
  return g;
}

export const dialect = {
  about() {
    return { vendor: "Your Utility Software Company", name: "{{name}}", version: "0.1.0" };
  },

  ping() {
    ok("PING", []).end();
  },

  accountQuery(card) {
    const f = ok("ACCOUNT", [card.cardSerial, card.utilityCode, card.customerNumber, card.meterNumber, String(card.purchaseCount)]);
    const account = {
      customerNumber: f.text("customer number"),
      customerName: fit(f.text("name")),
      address: fit(f.text("address")),
      meterNumber: f.text("meter number"),
      cardSerial: f.text("card serial"),
      status: undefined,
      purchaseCount: 0,
      priceFenPerKwh: 0,
      arrearsFen: 0n,
      lastPurchase: undefined,
    };
    const status = f.text("status");
    account.status = lookup(STATUSES, status);
    if (account.status === undefined) throw f.bad("status", `${quote(status)} is not A, C or S`);
    account.purchaseCount = f.number32("purchase count");
    account.priceFenPerKwh = f.number32("price");
    account.arrearsFen = f.number("arrears");
    f.end();
    return account;
  },

  /** A refusal here is an answer ("may not buy now"), not a failed call. */
  canBuy(card, p) {
    const [kind, value] = exchange("CANBUY", [card.cardSerial, card.customerNumber, String(card.purchaseCount), ...purchase(p)]);
    if (kind === "NO") return { refusal: value, minFen: 0n, maxFen: 0n };
    if (kind === "NONE") throw malformed("CANBUY reply: NONE, where OK or NO was expected");
    const check = { refusal: undefined, minFen: value.number("min"), maxFen: value.number("max") };
    value.end();
    return check;
  },

  /** Changes state: the backend takes the sale. The kiosk serial makes a retry recognised. */
  sale(request) {
    const card = request.card;
    const payment = request.payment === "cash" ? "CASH" : "CARD";
    return grant(
      ok("SALE", [
        request.terminalId,
        String(request.kioskSerial),
        card.cardSerial,
        card.customerNumber,
        String(card.purchaseCount),
        ...purchase(request.purchase),
        payment,
        String(request.paidFen),
      ]),
      request.kioskSerial,
    );
  },

  saleStatus(terminalId, kioskSerial) {
    const [kind, value] = exchange("STATUS", [terminalId, String(kioskSerial)]);
    if (kind === "NONE") return { tag: "not-found" };
    if (kind === "NO") return { tag: "refused", val: value };
    return { tag: "granted", val: grant(value, kioskSerial) };
  },

  /** Changes state: the backend books the write. */
  confirmWrite(c) {
    ok("CONFIRM", [c.terminalId, String(c.kioskSerial), c.cardSerial, c.written ? "Y" : "N", hex(c.returnData)]).end();
  },

  authenticate(_request) {
    throw backendError("not-supported");
  },

  /** The PSC is a secret: never log it. */
  cardPassword(card) {
    const f = ok("PSC", [card.cardSerial, card.customerNumber]);
    const psc = f.hex("PSC");
    f.end();
    return psc;
  },

  /** Changes state: the backend closes the period on its side. */
  reconcile(report) {
    const ours = BUSINESSES.map(([business]) =>
      report.totals
        .filter((t) => t.business === business)
        .reduce(([n, fen], t) => [n + BigInt(t.count), fen + BigInt(t.amountFen)], [0n, 0n]),
    );
    const figures = ours.flatMap(([n, fen]) => [String(n), String(fen)]);
    const f = ok("RECON", [report.terminalId, String(report.periodId), report.openedAt, report.closedAt, ...figures]);
    const backendTotals = [];
    const differences = [];
    BUSINESSES.forEach(([business, what], i) => {
      const count = f.number32(`${what} count`);
      const amountFen = f.number(`${what} amount`);
      const [n, fen] = ours[i];
      if (BigInt(count) !== n || amountFen !== fen) {
        differences.push(`${what}: the kiosk has ${n} for ${fen} fen, the backend ${count} for ${amountFen} fen`);
      }
      backendTotals.push({ business, count, amountFen });
    });
    f.end();
    return { matched: differences.length === 0, backendTotals, differences };
  },
};

/** Contract 1.1. The DEMO backend has none of it: each call says so without sending anything. */
export const billing = {
  quote(_card, _purchase) {
    throw backendError("not-supported");
  },
  billQuery(_customerNumber) {
    throw backendError("not-supported");
  },
  billPay(_request) {
    throw backendError("not-supported");
  },
  billPaymentStatus(_terminalId, _kioskSerial) {
    throw backendError("not-supported");
  },
  reconcilePeriod(_report) {
    throw backendError("not-supported");
  },
};
