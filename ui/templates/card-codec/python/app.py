"""{{name}}: a card codec for the "DEMO" layout on an SLE4442 memory card, in Python.

Replace the layout with your card's; keep the rules each method states, which
`selfvend plugin test` checks. The layout (addresses in the card's 256 bytes):
  20..24  "DEMO", the layout tag `identify` looks for
  24..2C  card serial, 16 BCD digits
  2C..2E  utility code, 4 BCD digits
  30..3C  customer number, ASCII, space-padded
  3C..48  meter number, ASCII, space-padded
  80..90  credit slot A;  90..A0  credit slot B
A slot is: sequence (1), purchase count (2), amount in fen (4), energy in Wh (4), taken by the
meter (1), unused (2), CRC-16/CCITT of the first 14 bytes (2), all big-endian. The current slot
is the valid one with the newer sequence. A credit is written into the other slot in one
command, so a card pulled mid-write leaves the old slot current: the write is tear-safe.

WIT errors in Python: an imported function's `result` error arrives as `Err(value)` raised;
a `result` you return is an `Err(value)` you raise, with a value of the function's own error
type. Anything else raised (a channel error let through, an exception) traps the instance.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

ATR = bytes([0x3B, 0x04, 0xA2, 0x13, 0x10, 0x91])
TAG = b"DEMO"
SLOTS = (0x80, 0x90)


def fail(error):
    """Raise a card-error: the only exception a codec function may let out."""
    raise Err(error)


def crc16(data):
    """CRC-16/CCITT-FALSE."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def transmit(card, apdu, step):
    """One APDU; every channel error becomes a card error. Returns (data, sw1, sw2)."""
    try:
        response = card.transmit(apdu)
    except Err as e:
        if isinstance(e.value, types.ChannelError_CardRemoved):
            fail(types.CardError_CardRemoved())
        if isinstance(e.value, types.ChannelError_ReaderFault):
            fail(types.CardError_ReaderFault(e.value.value))
        fail(types.CardError_ReaderFault(f"the host refused the command: {e.value.value}"))
    if len(response) < 2:
        fail(types.CardError_Malformed(f"{step}: an answer of {len(response)} byte(s)"))
    return bytes(response[:-2]), response[-2], response[-1]


def unexpected(step, apdu, sw1, sw2):
    return types.CardError_UnexpectedStatus(
        types.ApduFailure(step=step, header=bytes(apdu[:4]), status=(sw1 << 8) | sw2))


def command(card, apdu, step):
    """A command that must answer 90 00; returns its data."""
    data, sw1, sw2 = transmit(card, apdu, step)
    if (sw1, sw2) != (0x90, 0x00):
        fail(unexpected(step, apdu, sw1, sw2))
    return data


# The reader's pseudo-APDUs for memory cards (ACS style): FF A4 select card type, FF B0 read,
# FF D0 write, FF 20 present the PSC.

def select(card):
    command(card, bytes([0xFF, 0xA4, 0x00, 0x00, 0x01, 0x06]), "select SLE4442")


def read(card, addr, length, step):
    data = command(card, bytes([0xFF, 0xB0, 0x00, addr, length]), step)
    if len(data) != length:
        fail(types.CardError_Malformed(f"{step}: {len(data)} bytes where {length} were asked for"))
    return data


def write(card, addr, data, step):
    command(card, bytes([0xFF, 0xD0, 0x00, addr, len(data)]) + data, step)


def present_psc(card, psc):
    """Presents the PSC once. The card spends a try on a wrong one, so this is never retried."""
    apdu = bytes([0xFF, 0x20, 0x00, 0x00, len(psc)]) + bytes(psc)
    _, sw1, counter = transmit(card, apdu, "present PSC")
    if (sw1, counter) == (0x90, 0x07):
        return
    if (sw1, counter) == (0x90, 0x00):
        fail(types.CardError_CardLocked())
    if sw1 == 0x90 and counter < 0x07:
        fail(types.CardError_PscRefused(bin(counter).count("1")))
    fail(unexpected("present PSC", apdu, sw1, counter))


class Slot:
    def __init__(self, sequence, purchase_count, amount, energy, taken=False):
        self.sequence = sequence
        self.purchase_count = purchase_count
        self.amount = amount
        self.energy = energy
        self.taken = taken

    @staticmethod
    def decode(raw):
        """None when the CRC is wrong: a slot never written, or torn."""
        if crc16(raw[:14]) != int.from_bytes(raw[14:16], "big"):
            return None
        return Slot(raw[0], int.from_bytes(raw[1:3], "big"), int.from_bytes(raw[3:7], "big"),
                    int.from_bytes(raw[7:11], "big"), raw[11] == 1)

    def encode(self):
        body = (bytes([self.sequence]) + self.purchase_count.to_bytes(2, "big")
                + self.amount.to_bytes(4, "big") + self.energy.to_bytes(4, "big")
                + bytes([1 if self.taken else 0, 0, 0]))
        return body + crc16(body).to_bytes(2, "big")

    def carries(self, grant):
        return (self.purchase_count == grant.purchase_count and self.amount == grant.amount_fen
                and self.energy == grant.energy_wh)


def bcd(raw, field):
    digits = ""
    for b in raw:
        for d in (b >> 4, b & 0x0F):
            if d > 9:
                fail(types.CardError_Malformed(f"{field}: {b:02X} is not BCD"))
            digits += str(d)
    return digits


def text(raw, field):
    try:
        return raw.decode("ascii").rstrip()
    except UnicodeDecodeError:
        fail(types.CardError_Malformed(f"{field}: not text"))


class Image:
    def __init__(self, card):
        select(card)
        m = read(card, 0x20, 0x80, "read card memory")  # 20..A0
        if m[0:4] != TAG:
            fail(types.CardError_Malformed("no DEMO layout tag at 20"))
        self.serial = bcd(m[0x04:0x0C], "card serial")
        self.utility = bcd(m[0x0C:0x0E], "utility code")
        self.customer = text(m[0x10:0x1C], "customer number")
        self.meter = text(m[0x1C:0x28], "meter number")
        a, b = Slot.decode(m[0x60:0x70]), Slot.decode(m[0x70:0x80])
        if a and b and ((b.sequence - a.sequence) & 0xFF) in range(1, 128):
            self.current, self.current_at = b, 1
        elif a:
            self.current, self.current_at = a, 0
        elif b:
            self.current, self.current_at = b, 1
        else:
            self.current, self.current_at = None, 1

    def purchase_count(self):
        return self.current.purchase_count if self.current else 0

    def free_slot(self):
        """The slot a new credit goes into: never the current one."""
        return SLOTS[1 - self.current_at]

    def check_serial(self, grant):
        if grant.card_serial != self.serial:
            fail(types.CardError_WrongCard(
                f"grant is for card {grant.card_serial!r}; this card is {self.serial}"))

    def card_data(self):
        pending = None
        if self.current and not self.current.taken:
            pending = types.PendingCredit(purchase_count=self.current.purchase_count,
                                          amount_fen=self.current.amount,
                                          energy_wh=self.current.energy)
        return types.CardData(
            card_serial=self.serial, utility_code=self.utility, customer_number=self.customer,
            meter_number=self.meter, role=types.CardRole.USER,
            purchase_count=self.purchase_count(), pending=pending, return_data=None)


class Codec(exports.Codec):
    def about(self):
        return types.CodecInfo(vendor="Your Meter Company", name="{{name}}", version="0.1.0")

    def identify(self, card):
        """Only its own card: the ATR, then one read-only probe. None for anything else."""
        if card.reader_kind() != types.ReaderKind.MEMORY_CARD or bytes(card.atr()) != ATR:
            return None
        select(card)
        if read(card, 0x20, 4, "read layout tag") != TAG:
            return None
        return types.Identification(card_type="{{name}}-demo", write_auth=types.WriteAuth.PSC)

    def read(self, card):
        image = Image(card)
        log.log(log.Level.DEBUG, f"read card {image.serial}, purchase count {image.purchase_count()}")
        return image.card_data()

    def write_credit(self, card, grant, authority):
        """Refuses a grant for another card, or not for count + 1, before it touches the card;
        asks for the PSC once and presents it once."""
        image = Image(card)
        image.check_serial(grant)
        if image.current and image.current.carries(grant):
            return  # Already on the card: a re-write after a tear that finished.
        following = image.purchase_count() + 1
        if grant.purchase_count != following:
            fail(types.CardError_GrantRejected(
                f"grant carries purchase count {grant.purchase_count}; the card's next is {following}"))
        if grant.purchase_count > 0xFFFF:
            fail(types.CardError_GrantRejected("the card counts 65535 purchases at most"))
        if grant.amount_fen >= 1 << 32 or grant.energy_wh >= 1 << 32:
            fail(types.CardError_GrantRejected("the amount or energy does not fit the card"))
        sequence = (image.current.sequence + 1) & 0xFF if image.current else 1
        slot = Slot(sequence, grant.purchase_count, grant.amount_fen, grant.energy_wh)
        try:
            psc = authority.card_password()
        except Err as e:
            fail(types.CardError_AuthorityFailed(str(e.value.value)))
        present_psc(card, psc)
        write(card, image.free_slot(), slot.encode(), "write credit slot")
        log.log(log.Level.INFO, f"wrote purchase {grant.purchase_count} onto card {image.serial}")

    def verify(self, card, grant):
        image = Image(card)
        image.check_serial(grant)
        if image.current and image.current.carries(grant):
            return types.VerifyOutcome.WRITTEN
        return types.VerifyOutcome.NOT_WRITTEN
