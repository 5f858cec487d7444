"""{{name}}: an acquirer dialect for the "DEMO" line protocol, in Python.

Replace the protocol with your acquirer's; keep the rules each method states, which
`selfvend plugin test` checks. The DEMO protocol: one request per TCP connection. The kiosk
sends one line and the acquirer answers one line, each UTF-8 text ending in "\\n", its fields
separated by "|". Every line but the sign-on's ends in `|MAC`: 16 hex digits, the MAC of the
line's bytes before that "|", made by the PIN pad (`security.mac`) under the MAC key the last
sign-on delivered.

  SIGNON|terminal|merchant|stan|batch
      -> OK|stan|PIN key|its check|MAC key|its check  (hex; keys under the master key)
  SALE|terminal|merchant|stan|batch|fen|PAN|expiry|Track 2 hex|PIN block hex or empty|MAC
      -> APPROVED|stan|RRN|auth code|fen|MMDDhhmmss|MAC, or DECLINED|stan|code|message|MAC
  REVERSAL|terminal|merchant|stan|batch|fen|PAN|expiry|Track 2 hex|NO-ANSWER or CANCELLED|MAC
      -> OK|stan|MAC
  SETTLE|terminal|merchant|stan|batch|count|fen|MAC   -> OK|stan|count|fen|MAC

Any request may get `NO|stan|message|MAC` instead: the acquirer did nothing (a MAC error,
sign on first). `stan` in a reply repeats the request's. Money is in fen.

Card data never reaches the log: no PAN, no Track 2, no PIN block, however short.

WIT errors in Python: an imported function's `result` error arrives as `Err(value)` raised;
a `result` you return is an `Err(value)` you raise, with a value of the function's own error
type. Anything else raised (an exception you did not catch) traps the instance, which the kiosk
treats as a broken plugin.
"""

import unicodedata

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import connection, log, security, types

# The longest reply line read; a longer one is malformed.
MAX_REPLY = 1024
# The longest text the kiosk takes in an error or a decline, in UTF-8 bytes.
MAX_TEXT = 256
HEX_DIGITS = set("0123456789abcdefABCDEF")

DECLINE_CODES = {
    "51": types.DeclineCode.INSUFFICIENT_FUNDS,
    "55": types.DeclineCode.WRONG_PIN,
    "75": types.DeclineCode.PIN_TRIES_EXCEEDED,
    "41": types.DeclineCode.CARD_BLOCKED,
    "43": types.DeclineCode.CARD_BLOCKED,
    "62": types.DeclineCode.CARD_BLOCKED,
    "14": types.DeclineCode.INVALID_CARD,
    "54": types.DeclineCode.EXPIRED_CARD,
}


def fit(text):
    """`text` as the kiosk takes it: control characters as spaces, cut to MAX_TEXT bytes. A
    longer or stranger text would make the kiosk take the answer as the plugin's failure."""
    out, size = [], 0
    for c in text:
        if size + len(c.encode()) > MAX_TEXT - 3:
            out.append("\u2026")
            break
        out.append(" " if unicodedata.category(c) == "Cc" else c)
        size += len(c.encode())
    return "".join(out)


def quote(value):
    """A value quoted in an error: at most its first 32 characters."""
    return repr(value[:32]) + ("\u2026" if len(value) > 32 else "")


def is_hex(value, length):
    # Checked before bytes.fromhex, which would skip spaces.
    return len(value) == 2 * length and set(value) <= HEX_DIGITS


def fail(error):
    """Raise an acquirer-error: the only exception a dialect function may let out. Its text is
    fitted to what the kiosk takes."""
    error.value = fit(error.value)
    raise Err(error)


def malformed(text):
    fail(types.AcquirerError_MalformedReply(text))


def short(kind):
    """A reply's kind as far as the log and errors show it: the acquirer's, but unchecked."""
    return kind[:16]


class Fields:
    """The fields of a reply after its first, read in order, each checked and named in any error."""

    def __init__(self, command, fields):
        self.command = command
        self.fields = fields
        self.next = 0

    def bad(self, name, what):
        malformed(f"{self.command} reply, field {self.next} ({name}): {what}")

    def text(self, name):
        self.next += 1
        if self.next > len(self.fields):
            self.bad(name, "missing")
        return self.fields[self.next - 1]

    def id(self, name):
        """Text the kiosk keeps as a reference: not empty, at most 64 bytes."""
        value = self.text(name)
        if not value:
            self.bad(name, "empty")
        if len(value.encode()) > 64:
            self.bad(name, f"{len(value.encode())} bytes, over 64")
        return value

    def time(self, name):
        """The acquirer's local time, MMDDhhmmss."""
        value = self.text(name)
        if not (len(value) == 10 and value.isascii() and value.isdigit()):
            self.bad(name, f"{quote(value)} is not MMDDhhmmss")
        return value

    def number(self, name, limit=2**64 - 1):
        value = self.text(name)
        # Digits only: int() would take a sign, spaces and underscores.
        if not (value.isascii() and value.isdigit()):
            self.bad(name, f"{quote(value)} is not a number")
        if int(value) > limit:
            self.bad(name, f"{quote(value)} is over {limit}")
        return int(value)

    def hex(self, name, length):
        value = self.text(name)
        if not is_hex(value, length):
            self.bad(name, f"{quote(value)} is not {length} bytes of hex")
        return bytes.fromhex(value)

    def stan(self, stan):
        """The reply's STAN, which must be the request's: a reply to another request says
        nothing of this one."""
        theirs = self.number("stan")
        if theirs != stan:
            self.bad("stan", f"{theirs}, where {stan} was sent")

    def end(self):
        """The reply must end here: more fields is a protocol this dialect does not know."""
        if len(self.fields) != self.next:
            malformed(f"{self.command} reply: {len(self.fields)} fields where {self.next} were expected")


def line(command, fields):
    """A request line's text before its MAC, from (name, value) pairs. A field holding "|" or a
    line break could not be sent as itself, so the request is not sent at all; the error names
    the field, never its value, which may be card data."""
    for name, value in fields:
        if any(c in value for c in "|\r\n"):
            fail(types.AcquirerError_Unreachable(
                f"{command}: not sent: the {name} holds a \"|\" or a line break"))
    return "|".join([command, *(value for _, value in fields)])


def mac(command, data, failure):
    try:
        return security.mac(data).hex().upper()
    except Err as e:
        fail(failure(f"{command}: the PIN pad could not MAC: {e.value}"))


def net(command, doing, error):
    if isinstance(error, connection.NetError_Timeout):
        why = "timed out"
    elif isinstance(error, connection.NetError_Closed):
        why = "the acquirer closed the connection"
    elif isinstance(error, connection.NetError_ConnectFailed):
        why = f"could not connect: {error.value}"
    elif isinstance(error, connection.NetError_TooLarge):
        why = "over the byte cap"
    else:
        why = str(error.value)
    return f"{command}: {doing}: {why}"


def exchange(command, request):
    """Sends `request` and reads one reply line, without its end of line. Until the request is
    sent, a failure is `unreachable`; after it, the acquirer may have acted, so a failure is
    `outcome-unknown` (and a purchase is reversed)."""
    try:
        conn = connection.Connection.open()
    except Err as e:
        fail(types.AcquirerError_Unreachable(net(command, "connecting", e.value)))
    with conn:
        try:
            conn.send((request + "\n").encode())
        except Err as e:
            fail(types.AcquirerError_OutcomeUnknown(net(command, "sending", e.value)))
        reply = b""
        while b"\n" not in reply:
            if len(reply) >= MAX_REPLY:
                malformed(f"{command} reply: no end of line in its first {MAX_REPLY} bytes")
            try:
                chunk = conn.receive(MAX_REPLY - len(reply))
            except Err as e:
                fail(types.AcquirerError_OutcomeUnknown(net(command, "waiting for the reply", e.value)))
            if not chunk:
                fail(types.AcquirerError_OutcomeUnknown(
                    f"{command}: the acquirer closed the connection after {len(reply)} bytes, "
                    "before the reply's end of line"))
            reply += chunk
    end = reply.index(b"\n")
    if end + 1 != len(reply):
        malformed(f"{command} reply: {len(reply) - end - 1} bytes after its end of line")
    try:
        return reply[:end].decode()
    except UnicodeDecodeError as e:
        malformed(f"{command} reply: not UTF-8 at byte {e.start}")


def call(command, stan, fields):
    """Sends a MAC'd request and returns the reply's kind and fields once its MAC verifies. A
    reply whose MAC does not verify may not be the acquirer's: its outcome is unknown."""
    text = line(command, fields)
    reply = exchange(command, text + "|" + mac(command, text.encode(), types.AcquirerError_Security))
    if "|" not in reply:
        malformed(f"{command} reply: no MAC")
    body, theirs = reply.rsplit("|", 1)
    ours = mac(command, body.encode(), types.AcquirerError_OutcomeUnknown)
    if not is_hex(theirs, 8) or theirs.upper() != ours:
        fail(types.AcquirerError_OutcomeUnknown(f"{command}: the reply's MAC does not verify"))
    kind, *rest = body.split("|")
    f = Fields(command, rest)
    # The kind only: a reply carries card data.
    log.log(log.Level.INFO, f"{command} stan {stan}: {short(kind)}")
    if kind == "NO":
        f.stan(stan)
        message = f.text("message")
        f.end()
        fail(types.AcquirerError_Refused(message))
    return kind, f


def card_fields(card):
    return [("card number", card.pan), ("expiry", card.expiry), ("Track 2", card.track2.hex().upper())]


def terminal_fields(t):
    return [("terminal id", t.terminal_id), ("merchant id", t.merchant_id)]


class Dialect(exports.Dialect):
    def about(self):
        return types.DialectInfo(vendor="Your Acquirer Software Company", name="{{name}}", version="0.1.0")

    def sign_on(self, request):
        """Not MAC'd: the keys it fetches are what MACs are made with. They come encrypted under
        the PIN pad's master key; the pad checks each against its check value as it loads it."""
        fields = terminal_fields(request.terminal) + [("stan", str(request.stan)), ("batch", str(request.batch))]
        reply = exchange("SIGNON", line("SIGNON", fields))
        kind, *rest = reply.split("|")
        f = Fields("SIGNON", rest)
        log.log(log.Level.INFO, f"SIGNON stan {request.stan}: {short(kind)}")
        if kind == "NO":
            f.stan(request.stan)
            message = f.text("message")
            f.end()
            fail(types.AcquirerError_Refused(message))
        if kind != "OK":
            malformed(f"SIGNON reply: starts {short(kind)!r}, not OK or NO")
        # The STAN, so that an old sign-on's reply cannot bring back old keys.
        f.stan(request.stan)
        keys = types.WorkingKeys(pin_key=f.hex("PIN key", 16), pin_key_check=f.hex("PIN key check", 4),
                                 mac_key=f.hex("MAC key", 16), mac_key_check=f.hex("MAC key check", 4))
        f.end()
        return keys

    def purchase(self, request):
        """Changes state: the acquirer debits the card."""
        fields = terminal_fields(request.terminal) + [
            ("stan", str(request.stan)), ("batch", str(request.batch)), ("amount", str(request.amount_fen)),
            *card_fields(request.card), ("PIN block", (request.pin_block or b"").hex().upper())]
        kind, f = call("SALE", request.stan, fields)
        if kind == "APPROVED":
            f.stan(request.stan)
            outcome = types.PurchaseOutcome_Approved(types.Approval(
                rrn=f.id("RRN"), auth_code=f.id("auth code"), amount_fen=f.number("amount"),
                acquirer_time=f.time("time")))
        elif kind == "DECLINED":
            f.stan(request.stan)
            code = f.id("response code")
            outcome = types.PurchaseOutcome_Declined(types.Decline(
                code=DECLINE_CODES.get(code, types.DeclineCode.OTHER), response_code=code,
                message=fit(f.text("message"))))
        else:
            malformed(f"SALE reply: starts {short(kind)!r}, not APPROVED, DECLINED or NO")
        f.end()
        return outcome

    def reversal(self, request):
        """Changes state: the acquirer undoes the purchase. The kiosk sends it until it is
        acknowledged, so the acquirer must take a repeat as the same reversal."""
        reason = "NO-ANSWER" if request.reason == types.ReversalReason.NO_ANSWER else "CANCELLED"
        fields = terminal_fields(request.terminal) + [
            ("stan", str(request.stan)), ("batch", str(request.batch)), ("amount", str(request.amount_fen)),
            *card_fields(request.card), ("reason", reason)]
        kind, f = call("REVERSAL", request.stan, fields)
        if kind != "OK":
            malformed(f"REVERSAL reply: starts {short(kind)!r}, not OK or NO")
        f.stan(request.stan)
        f.end()

    def settle(self, request):
        """Changes state: the acquirer closes the batch."""
        fields = terminal_fields(request.terminal) + [
            ("stan", str(request.stan)), ("batch", str(request.batch)), ("count", str(request.count)),
            ("amount", str(request.amount_fen))]
        kind, f = call("SETTLE", request.stan, fields)
        if kind != "OK":
            malformed(f"SETTLE reply: starts {short(kind)!r}, not OK or NO")
        f.stan(request.stan)
        count = f.number("count", 2**32 - 1)
        amount = f.number("amount")
        f.end()
        return types.Settlement(balanced=(count, amount) == (request.count, request.amount_fen),
                                acquirer_count=count, acquirer_amount_fen=amount)
