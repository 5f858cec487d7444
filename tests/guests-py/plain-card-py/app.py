"""The plain test codec written in Python (componentize-py), to prove that a component built by
another toolchain, importing all of WASI 0.2, loads and runs with every capability empty.

The card's one record is plain text: `serial|utility|customer|meter|purchase_count`. On `read`
the codec also probes the sandbox (a file, the environment, the arguments) and logs what it saw.
"""

import os
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

READ_RECORD = bytes([0x00, 0xB0, 0x00, 0x00, 0x00])
UPDATE_RECORD = bytes([0x00, 0xD6, 0x00, 0x00])


def transmit(card, step, command):
    response = card.transmit(command)
    if len(response) < 2:
        raise Err(types.CardError_Malformed(f"{step}: answer of {len(response)} bytes"))
    status = int.from_bytes(response[-2:], "big")
    if status != 0x9000:
        raise Err(types.CardError_UnexpectedStatus(
            types.ApduFailure(step=step, header=bytes(command[:4]), status=status)))
    return response[:-2]


def read_record(card):
    text = transmit(card, "read record", READ_RECORD).decode("utf-8")
    fields = text.split("|")
    if len(fields) != 5:
        raise Err(types.CardError_Malformed(f"record has {len(fields)} fields, expected 5"))
    serial, utility, customer, meter, count = fields
    return types.CardData(
        card_serial=serial, utility_code=utility, customer_number=customer,
        meter_number=meter, role=types.CardRole.USER, purchase_count=int(count),
        pending=None, return_data=None)


def probe_sandbox():
    try:
        with open("/etc/passwd") as f:
            seen = f"file: read {len(f.read())} bytes"
    except OSError as e:
        seen = f"file: refused ({type(e).__name__})"
    log.log(log.Level.INFO, f"{seen}; environment: {len(os.environ)} variables; arguments: {len(sys.argv)}")


class Codec(exports.Codec):
    def about(self):
        return types.CodecInfo(vendor="selfvend tests", name="plain-card-py", version="0.1.0")

    def identify(self, card):
        if card.atr() == b"plain":
            return types.Identification(card_type="plain-test-card", write_auth=types.WriteAuth.NONE)
        return None

    def read(self, card):
        probe_sandbox()
        return read_record(card)

    def write_credit(self, card, grant, authority):
        data = read_record(card)
        if data.card_serial != grant.card_serial:
            raise Err(types.CardError_WrongCard(
                f"grant is for card {grant.card_serial}, the reader holds card {data.card_serial}"))
        if grant.purchase_count != data.purchase_count + 1:
            raise Err(types.CardError_GrantRejected(
                f"grant carries purchase count {grant.purchase_count}, card is at {data.purchase_count}"))
        record = "|".join([data.card_serial, data.utility_code, data.customer_number,
                           data.meter_number, str(grant.purchase_count)]).encode()
        transmit(card, "update record", UPDATE_RECORD + bytes([len(record)]) + record)

    def verify(self, card, grant):
        data = read_record(card)
        if data.purchase_count == grant.purchase_count:
            return types.VerifyOutcome.WRITTEN
        return types.VerifyOutcome.NOT_WRITTEN
