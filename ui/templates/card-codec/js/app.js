// {{name}}: a card codec for the "DEMO" layout on an SLE4442 memory card, in JavaScript.
//
// Replace the layout with your card's; keep the rules each function states, which
// `selfvend plugin test` checks. The layout (addresses in the card's 256 bytes):
//   20..24  "DEMO", the layout tag `identify` looks for
//   24..2C  card serial, 16 BCD digits
//   2C..2E  utility code, 4 BCD digits
//   30..3C  customer number, ASCII, space-padded
//   3C..48  meter number, ASCII, space-padded
//   80..90  credit slot A;  90..A0  credit slot B
// A slot is: sequence (1), purchase count (2), amount in fen (4), energy in Wh (4), taken by
// the meter (1), unused (2), CRC-16/CCITT of the first 14 bytes (2), all big-endian. The
// current slot is the valid one with the newer sequence. A credit is written into the other
// slot in one command, so a card pulled mid-write leaves the old slot current: the write is
// tear-safe.
//
// WIT types in JavaScript: record fields are camelCase (`purchaseCount`, `amountFen`); enums
// are their WIT names as strings ("memory-card", "psc"); `option` is the value or `undefined`;
// `list<u8>` is a Uint8Array; u64 is a BigInt on the way in and may be a Number or BigInt on the
// way out; variants are `{ tag, val }`. Errors: an imported function's `result` error is thrown
// as an Error whose `payload` is the variant; a `result` you return is a variant you throw,
// `{ tag, val }` of the function's own error type. Anything else thrown traps the instance: a
// TypeError, or a channel error let through whose case no card-error shares (`refused`).

import { log } from "selfvend:card/log@1.0.0";

const ATR = [0x3b, 0x04, 0xa2, 0x13, 0x10, 0x91];
const TAG = "DEMO";
const SLOTS = [0x80, 0x90];

/** A card-error: the only thing a codec function may throw. */
function cardError(tag, val) {
  return val === undefined ? { tag } : { tag, val };
}

/** CRC-16/CCITT-FALSE. */
function crc16(data) {
  let crc = 0xffff;
  for (const byte of data) {
    crc ^= byte << 8;
    for (let i = 0; i < 8; i++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** One APDU; every channel error becomes a card error. Returns [data, sw1, sw2]. */
function transmit(card, apdu, step) {
  let response;
  try {
    response = card.transmit(Uint8Array.from(apdu));
  } catch (e) {
    const channel = e.payload ?? e;
    if (channel.tag === "card-removed") throw cardError("card-removed");
    if (channel.tag === "reader-fault") throw cardError("reader-fault", channel.val);
    throw cardError("reader-fault", `the host refused the command: ${channel.val}`);
  }
  if (response.length < 2) {
    throw cardError("malformed", `${step}: an answer of ${response.length} byte(s)`);
  }
  const n = response.length;
  return [response.slice(0, n - 2), response[n - 2], response[n - 1]];
}

function unexpected(step, apdu, sw1, sw2) {
  return cardError("unexpected-status", {
    step,
    header: Uint8Array.from(apdu.slice(0, 4)),
    status: (sw1 << 8) | sw2,
  });
}

/** A command that must answer 90 00; returns its data. */
function command(card, apdu, step) {
  const [data, sw1, sw2] = transmit(card, apdu, step);
  if (sw1 !== 0x90 || sw2 !== 0x00) throw unexpected(step, apdu, sw1, sw2);
  return data;
}

// The reader's pseudo-APDUs for memory cards (ACS style): FF A4 select card type, FF B0 read,
// FF D0 write, FF 20 present the PSC.

function select(card) {
  command(card, [0xff, 0xa4, 0x00, 0x00, 0x01, 0x06], "select SLE4442");
}

function read(card, addr, length, step) {
  const data = command(card, [0xff, 0xb0, 0x00, addr, length], step);
  if (data.length !== length) {
    throw cardError("malformed", `${step}: ${data.length} bytes where ${length} were asked for`);
  }
  return data;
}

function write(card, addr, data, step) {
  command(card, [0xff, 0xd0, 0x00, addr, data.length, ...data], step);
}

/** Presents the PSC once. The card spends a try on a wrong one, so this is never retried. */
function presentPsc(card, psc) {
  const apdu = [0xff, 0x20, 0x00, 0x00, psc.length, ...psc];
  const [, sw1, counter] = transmit(card, apdu, "present PSC");
  if (sw1 === 0x90 && counter === 0x07) return;
  if (sw1 === 0x90 && counter === 0x00) throw cardError("card-locked");
  if (sw1 === 0x90 && counter < 0x07) {
    throw cardError("psc-refused", (counter & 1) + ((counter >> 1) & 1) + ((counter >> 2) & 1));
  }
  throw unexpected("present PSC", apdu, sw1, counter);
}

const be = (bytes) => bytes.reduce((n, b) => n * 256 + b, 0);
const toBe = (n, len) => Array.from({ length: len }, (_, i) => Math.floor(n / 256 ** (len - 1 - i)) % 256);

/** A slot, or undefined when its CRC is wrong: never written, or torn. */
function decodeSlot(raw) {
  if (crc16(raw.slice(0, 14)) !== be(raw.slice(14, 16))) return undefined;
  return {
    sequence: raw[0],
    purchaseCount: be(raw.slice(1, 3)),
    amount: be(raw.slice(3, 7)),
    energy: be(raw.slice(7, 11)),
    taken: raw[11] === 1,
  };
}

function encodeSlot(slot) {
  const body = [
    slot.sequence,
    ...toBe(slot.purchaseCount, 2),
    ...toBe(slot.amount, 4),
    ...toBe(slot.energy, 4),
    0, 0, 0,
  ];
  return [...body, ...toBe(crc16(body), 2)];
}

function carries(slot, grant) {
  return (
    slot !== undefined &&
    slot.purchaseCount === grant.purchaseCount &&
    BigInt(slot.amount) === BigInt(grant.amountFen) &&
    BigInt(slot.energy) === BigInt(grant.energyWh)
  );
}

function bcd(raw, field) {
  let digits = "";
  for (const b of raw) {
    for (const d of [b >> 4, b & 0x0f]) {
      if (d > 9) throw cardError("malformed", `${field}: ${b.toString(16)} is not BCD`);
      digits += d;
    }
  }
  return digits;
}

function text(raw, field) {
  if (raw.some((b) => b > 0x7e || (b < 0x20 && b !== 0))) throw cardError("malformed", `${field}: not text`);
  return String.fromCharCode(...raw).trimEnd();
}

function readImage(card) {
  select(card);
  const m = read(card, 0x20, 0x80, "read card memory"); // 20..A0
  if (String.fromCharCode(...m.slice(0, 4)) !== TAG) throw cardError("malformed", "no DEMO layout tag at 20");
  const a = decodeSlot(m.slice(0x60, 0x70));
  const b = decodeSlot(m.slice(0x70, 0x80));
  let current, currentAt;
  if (a && b && ((b.sequence - a.sequence) & 0xff) > 0 && ((b.sequence - a.sequence) & 0xff) < 128) {
    [current, currentAt] = [b, 1];
  } else if (a) {
    [current, currentAt] = [a, 0];
  } else if (b) {
    [current, currentAt] = [b, 1];
  } else {
    [current, currentAt] = [undefined, 1];
  }
  return {
    serial: bcd(m.slice(0x04, 0x0c), "card serial"),
    utility: bcd(m.slice(0x0c, 0x0e), "utility code"),
    customer: text(m.slice(0x10, 0x1c), "customer number"),
    meter: text(m.slice(0x1c, 0x28), "meter number"),
    current,
    // The slot a new credit goes into: never the current one.
    freeSlot: SLOTS[1 - currentAt],
    purchaseCount: current ? current.purchaseCount : 0,
  };
}

function checkSerial(image, grant) {
  if (grant.cardSerial !== image.serial) {
    throw cardError("wrong-card", `grant is for card ${JSON.stringify(grant.cardSerial)}; this card is ${image.serial}`);
  }
}

export const codec = {
  about() {
    return { vendor: "Your Meter Company", name: "{{name}}", version: "0.1.0" };
  },

  /** Only its own card: the ATR, then one read-only probe. undefined for anything else. */
  identify(card) {
    const atr = card.atr();
    if (card.readerKind() !== "memory-card" || atr.length !== ATR.length || ATR.some((b, i) => atr[i] !== b)) {
      return undefined;
    }
    select(card);
    if (String.fromCharCode(...read(card, 0x20, 4, "read layout tag")) !== TAG) return undefined;
    return { cardType: "{{name}}-demo", writeAuth: "psc" };
  },

  read(card) {
    const image = readImage(card);
    log("debug", `read card ${image.serial}, purchase count ${image.purchaseCount}`);
    const c = image.current;
    return {
      cardSerial: image.serial,
      utilityCode: image.utility,
      customerNumber: image.customer,
      meterNumber: image.meter,
      role: "user",
      purchaseCount: image.purchaseCount,
      pending: c && !c.taken
        ? { purchaseCount: c.purchaseCount, amountFen: BigInt(c.amount), energyWh: BigInt(c.energy) }
        : undefined,
      returnData: undefined,
    };
  },

  /** Refuses a grant for another card, or not for count + 1, before it touches the card;
   *  asks for the PSC once and presents it once. */
  writeCredit(card, grant, authority) {
    const image = readImage(card);
    checkSerial(image, grant);
    if (carries(image.current, grant)) return; // Already on the card: a re-write after a tear that finished.
    const next = image.purchaseCount + 1;
    if (grant.purchaseCount !== next) {
      throw cardError("grant-rejected", `grant carries purchase count ${grant.purchaseCount}; the card's next is ${next}`);
    }
    if (grant.purchaseCount > 0xffff) {
      throw cardError("grant-rejected", "the card counts 65535 purchases at most");
    }
    if (BigInt(grant.amountFen) >= 1n << 32n || BigInt(grant.energyWh) >= 1n << 32n) {
      throw cardError("grant-rejected", "the amount or energy does not fit the card");
    }
    const slot = {
      sequence: image.current ? (image.current.sequence + 1) & 0xff : 1,
      purchaseCount: grant.purchaseCount,
      amount: Number(grant.amountFen),
      energy: Number(grant.energyWh),
    };
    let psc;
    try {
      psc = authority.cardPassword();
    } catch (e) {
      throw cardError("authority-failed", String((e.payload ?? e).val ?? e));
    }
    presentPsc(card, [...psc]);
    write(card, image.freeSlot, encodeSlot(slot), "write credit slot");
    log("info", `wrote purchase ${grant.purchaseCount} onto card ${image.serial}`);
  },

  verify(card, grant) {
    const image = readImage(card);
    checkSerial(image, grant);
    return carries(image.current, grant) ? "written" : "not-written";
  },
};
