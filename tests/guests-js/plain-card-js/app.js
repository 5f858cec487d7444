// The plain test codec written in JavaScript (jco componentize), to prove that a component built
// by another toolchain, importing WASI 0.2, loads and runs with every capability empty.
// The card's one record is plain text: `serial|utility|customer|meter|purchase_count`.

import { log } from "selfvend:card/log@1.0.0";

const READ_RECORD = new Uint8Array([0x00, 0xb0, 0x00, 0x00, 0x00]);

function transmit(card, step, command) {
  const response = card.transmit(command);
  if (response.length < 2) {
    throw { tag: "malformed", val: `${step}: answer of ${response.length} bytes` };
  }
  const status = (response[response.length - 2] << 8) | response[response.length - 1];
  if (status !== 0x9000) {
    throw {
      tag: "unexpected-status",
      val: { step, header: command.slice(0, 4), status },
    };
  }
  return response.slice(0, response.length - 2);
}

function readRecord(card) {
  const text = new TextDecoder().decode(transmit(card, "read record", READ_RECORD));
  const fields = text.split("|");
  if (fields.length !== 5) {
    throw { tag: "malformed", val: `record has ${fields.length} fields, expected 5` };
  }
  const [cardSerial, utilityCode, customerNumber, meterNumber, count] = fields;
  return {
    cardSerial,
    utilityCode,
    customerNumber,
    meterNumber,
    role: "user",
    purchaseCount: Number.parseInt(count, 10),
    pending: undefined,
    returnData: undefined,
  };
}

export const codec = {
  about() {
    return { vendor: "selfvend tests", name: "plain-card-js", version: "0.1.0" };
  },

  identify(card) {
    const atr = new TextDecoder().decode(card.atr());
    return atr === "plain" ? { cardType: "plain-test-card", writeAuth: "none" } : undefined;
  },

  read(card) {
    log("info", `javascript codec: environment has ${Object.keys(globalThis.process?.env ?? {}).length} variables`);
    return readRecord(card);
  },

  writeCredit(card, grant, _authority) {
    const data = readRecord(card);
    if (grant.purchaseCount !== data.purchaseCount + 1) {
      throw {
        tag: "grant-rejected",
        val: `grant carries purchase count ${grant.purchaseCount}, card is at ${data.purchaseCount}`,
      };
    }
    const record = new TextEncoder().encode(
      [data.cardSerial, data.utilityCode, data.customerNumber, data.meterNumber, grant.purchaseCount].join("|"),
    );
    const command = new Uint8Array(5 + record.length);
    command.set([0x00, 0xd6, 0x00, 0x00, record.length]);
    command.set(record, 5);
    transmit(card, "update record", command);
  },

  verify(card, grant) {
    return readRecord(card).purchaseCount === grant.purchaseCount ? "written" : "not-written";
  },
};
