"""{{name}}: a backend dialect for the "DEMO" line protocol, in Python.

Replace the protocol with your backend's; keep the rules each method states, which
`selfvend plugin test` checks. The DEMO protocol: one request per TCP connection. The kiosk
sends one line and the backend answers one line, each UTF-8 text ending in "\\n", its fields
separated by "|". A request is a command and its fields; a reply is `OK|fields...`, `NONE`
(no such sale), or `NO|code|message` (a refusal, its code one of ACCOUNT-CLOSED, ARREARS,
CREDIT-NOT-TAKEN, OVER-LIMIT, UNKNOWN-CARD, CARD-MISMATCH, OTHER).

  PING                                         -> OK
  ACCOUNT|serial|utility|customer|meter|count  -> OK|customer|name|address|meter|serial|
                                                  A, C or S|count|fen per kWh|arrears fen
  CANBUY|serial|customer|count|M or E|value    -> OK|min fen|max fen, or NO|code|message
  SALE|terminal|kiosk serial|serial|customer|count|M or E|value|CASH or CARD|paid fen
                                               -> OK|kiosk serial|sale id|count|fen|Wh|token hex
  STATUS|terminal|kiosk serial                 -> as SALE, or NONE
  CONFIRM|terminal|kiosk serial|serial|Y or N|return data hex  -> OK
  PSC|serial|customer                          -> OK|PSC hex
  RECON|terminal|period|opened|closed|then count|fen for cash sales, bank-card sales and
       cash bill payments                      -> OK|the backend's six figures

"M" buys money in fen, "E" energy in Wh. Contract 1.1's billing calls, and `authenticate`
(CPU cards), are `not-supported`: the kiosk then prices from the account.

WIT errors in Python: an imported function's `result` error arrives as `Err(value)` raised;
a `result` you return is an `Err(value)` you raise, with a value of the function's own error
type. Anything else raised (an exception you did not catch) traps the instance, which the kiosk
treats as a broken plugin.
"""

import unicodedata

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import connection, log, types

# The longest reply line read; a longer one is malformed.
MAX_REPLY = 4096
# The longest text the kiosk takes in an error or a refusal, in UTF-8 bytes.
MAX_TEXT = 512
HEX_DIGITS = set("0123456789abcdefABCDEF")

REFUSAL_CODES = {
    "ACCOUNT-CLOSED": types.RefusalCode.ACCOUNT_CLOSED,
    "ARREARS": types.RefusalCode.ARREARS,
    "CREDIT-NOT-TAKEN": types.RefusalCode.CREDIT_NOT_TAKEN,
    "OVER-LIMIT": types.RefusalCode.OVER_LIMIT,
    "UNKNOWN-CARD": types.RefusalCode.UNKNOWN_CARD,
    "CARD-MISMATCH": types.RefusalCode.CARD_MISMATCH,
}

STATUSES = {
    "A": types.AccountStatus.ACTIVE,
    "C": types.AccountStatus.CLOSED,
    "S": types.AccountStatus.SUSPENDED,
}

# The three business types a period reports, in the order RECON carries them.
BUSINESSES = [
    (types.BusinessType.CASH_SALE, "cash sales"),
    (types.BusinessType.BANK_CARD_SALE, "bank-card sales"),
    (types.BusinessType.CASH_BILL_PAYMENT, "cash bill payments"),
]


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


def fail(error):
    """Raise a backend-error: the only exception a dialect function may let out. Its text is
    fitted to what the kiosk takes."""
    if isinstance(error, types.BackendError_Refused):
        error.value.message = fit(error.value.message)
    elif isinstance(getattr(error, "value", None), str):
        error.value = fit(error.value)
    raise Err(error)


def malformed(text):
    fail(types.BackendError_MalformedReply(text))


class Fields:
    """The fields of an OK reply, read in order, each checked and named in any error."""

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
        """Text the kiosk keeps as an id: not empty, at most 64 bytes."""
        value = self.text(name)
        if not value:
            self.bad(name, "empty")
        if len(value.encode()) > 64:
            self.bad(name, f"{len(value.encode())} bytes, over 64")
        return value

    def number(self, name, limit=2**64 - 1):
        value = self.text(name)
        # Digits only: int() would take a sign, spaces and underscores.
        if not (value.isascii() and value.isdigit()):
            self.bad(name, f"{quote(value)} is not a number")
        if int(value) > limit:
            self.bad(name, f"{quote(value)} is over {limit}")
        return int(value)

    def number32(self, name):
        return self.number(name, 2**32 - 1)

    def echo(self, name, sent):
        """A number the reply repeats from the request: a reply to another request says nothing
        of this one."""
        theirs = self.number(name)
        if theirs != sent:
            self.bad(name, f"{theirs}, where {sent} was sent")

    def hex(self, name):
        value = self.text(name)
        # Checked first: bytes.fromhex would skip spaces. Not quoted: the field may be a PSC.
        if len(value) % 2 or not set(value) <= HEX_DIGITS:
            self.bad(name, f"{len(value)} characters that are not hex")
        return bytes.fromhex(value)

    def end(self):
        """The reply must end here: more fields is a protocol this dialect does not know."""
        if len(self.fields) != self.next:
            malformed(f"{self.command} reply: {len(self.fields)} fields where {self.next} were expected")


def line(command, fields):
    """A request line. A field holding "|" or a line break could not be sent as itself, so the
    request is not sent at all."""
    for field in fields:
        if any(c in field for c in "|\r\n"):
            fail(types.BackendError_Unreachable(
                f"{command}: not sent: the field {quote(field)} holds a \"|\" or a line break"))
    return "|".join([command, *fields]) + "\n"


def net(command, doing, error):
    if isinstance(error, connection.NetError_Timeout):
        why = "timed out"
    elif isinstance(error, connection.NetError_Closed):
        why = "the backend closed the connection"
    elif isinstance(error, connection.NetError_ConnectFailed):
        why = f"could not connect: {error.value}"
    elif isinstance(error, connection.NetError_TooLarge):
        why = "over the byte cap"
    else:
        why = str(error.value)
    return f"{command}: {doing}: {why}"


def exchange(command, fields):
    """Sends one request line and reads one reply line: ("OK", Fields), ("NONE", None) or
    ("NO", Refusal). Until the request is sent, a failure is `unreachable`: the backend cannot
    have acted. After it, the backend may have acted, so a failure is `outcome-unknown`; the
    kiosk then asks with STATUS."""
    request = line(command, fields).encode()
    try:
        conn = connection.Connection.open()
    except Err as e:
        fail(types.BackendError_Unreachable(net(command, "connecting", e.value)))
    with conn:
        try:
            conn.send(request)
        except Err as e:
            fail(types.BackendError_OutcomeUnknown(net(command, "sending", e.value)))
        reply = b""
        while b"\n" not in reply:
            if len(reply) >= MAX_REPLY:
                malformed(f"{command} reply: no end of line in its first {MAX_REPLY} bytes")
            try:
                chunk = conn.receive(MAX_REPLY - len(reply))
            except Err as e:
                fail(types.BackendError_OutcomeUnknown(net(command, "waiting for the reply", e.value)))
            if not chunk:
                fail(types.BackendError_OutcomeUnknown(
                    f"{command}: the backend closed the connection after {len(reply)} bytes, "
                    "before the reply's end of line"))
            reply += chunk
    end = reply.index(b"\n")
    if end + 1 != len(reply):
        malformed(f"{command} reply: {len(reply) - end - 1} bytes after its end of line")
    try:
        text = reply[:end].decode()
    except UnicodeDecodeError as e:
        malformed(f"{command} reply: not UTF-8 at byte {e.start}")
    head, *rest = text.split("|")
    if head == "OK":
        answer = ("OK", Fields(command, rest))
    elif head == "NONE" and not rest:
        answer = ("NONE", None)
    elif head == "NO":
        f = Fields(command, rest)
        code = f.text("refusal code")
        message = f.text("refusal message")
        f.end()
        # A code this dialect does not know is still a refusal, in the backend's words.
        answer = ("NO", types.Refusal(code=REFUSAL_CODES.get(code, types.RefusalCode.OTHER), message=fit(message)))
    else:
        # Not quoted: the line may hold a PSC.
        malformed(f"{command} reply: its first field ({len(head)} characters) is not OK, NONE or NO")
    # The outcome only: a PSC reply carries key material.
    log.log(log.Level.DEBUG, f"{command}: {answer[0]}")
    return answer


def ok(command, fields):
    """An OK reply's fields; a refusal is `refused`, anything else malformed."""
    kind, value = exchange(command, fields)
    if kind == "NO":
        fail(types.BackendError_Refused(value))
    if kind == "NONE":
        malformed(f"{command} reply: NONE, where OK or NO was expected")
    return value


def purchase(p):
    if isinstance(p, types.Purchase_Money):
        return "M", str(p.value)
    return "E", str(p.value)


def grant(f, kiosk_serial):
    """A SALE or STATUS reply's grant, for the sale with this kiosk serial."""
    f.echo("kiosk serial", kiosk_serial)
    g = types.CreditGrant(
        backend_sale_id=f.id("sale id"),
        purchase_count=f.number32("purchase count"),
        amount_fen=f.number("amount"),
        energy_wh=f.number("energy"),
        token=f.hex("token"),
    )
    f.end()
    return g


class Dialect(exports.Dialect):
    def about(self):
        return types.DialectInfo(vendor="Your Utility Software Company", name="{{name}}", version="0.1.0")

    def ping(self):
        ok("PING", []).end()

    def account_query(self, card):
        f = ok("ACCOUNT", [card.card_serial, card.utility_code, card.customer_number,
                           card.meter_number, str(card.purchase_count)])
        customer_number = f.text("customer number")
        customer_name = fit(f.text("name"))
        address = fit(f.text("address"))
        meter_number = f.text("meter number")
        card_serial = f.text("card serial")
        status = f.text("status")
        if status not in STATUSES:
            f.bad("status", f"{status!r} is not A, C or S")
        account = types.Account(
            customer_number=customer_number, customer_name=customer_name, address=address,
            meter_number=meter_number, card_serial=card_serial, status=STATUSES[status],
            purchase_count=f.number32("purchase count"), price_fen_per_kwh=f.number32("price"),
            arrears_fen=f.number("arrears"), last_purchase=None)
        f.end()
        return account

    def can_buy(self, card, purchase_):
        """A refusal here is an answer ("may not buy now"), not a failed call."""
        kind, value = exchange("CANBUY", [card.card_serial, card.customer_number,
                                          str(card.purchase_count), *purchase(purchase_)])
        if kind == "NO":
            return types.BuyCheck(refusal=value, min_fen=0, max_fen=0)
        if kind == "NONE":
            malformed("CANBUY reply: NONE, where OK or NO was expected")
        check = types.BuyCheck(refusal=None, min_fen=value.number("min"), max_fen=value.number("max"))
        value.end()
        return check

    def sale(self, request):
        """Changes state: the backend takes the sale. The kiosk serial makes a retry recognised."""
        card = request.card
        payment = "CASH" if request.payment == types.PaymentKind.CASH else "CARD"
        return grant(ok("SALE", [request.terminal_id, str(request.kiosk_serial), card.card_serial,
                                 card.customer_number, str(card.purchase_count),
                                 *purchase(request.purchase), payment, str(request.paid_fen)]),
                     request.kiosk_serial)

    def sale_status(self, terminal_id, kiosk_serial):
        kind, value = exchange("STATUS", [terminal_id, str(kiosk_serial)])
        if kind == "NONE":
            return types.SaleOutcome_NotFound()
        if kind == "NO":
            return types.SaleOutcome_Refused(value)
        return types.SaleOutcome_Granted(grant(value, kiosk_serial))

    def confirm_write(self, c):
        """Changes state: the backend books the write."""
        ok("CONFIRM", [c.terminal_id, str(c.kiosk_serial), c.card_serial, "Y" if c.written else "N",
                       (c.return_data or b"").hex().upper()]).end()

    def authenticate(self, request):
        fail(types.BackendError_NotSupported())

    def card_password(self, card):
        """The PSC is a secret: never log it."""
        f = ok("PSC", [card.card_serial, card.customer_number])
        psc = f.hex("PSC")
        f.end()
        return psc

    def reconcile(self, report):
        """Changes state: the backend closes the period on its side."""
        ours = []
        for business, _ in BUSINESSES:
            totals = [t for t in report.totals if t.business == business]
            ours.append((sum(t.count for t in totals), sum(t.amount_fen for t in totals)))
        figures = [str(x) for pair in ours for x in pair]
        f = ok("RECON", [report.terminal_id, str(report.period_id), report.opened_at,
                         report.closed_at, *figures])
        backend_totals, differences = [], []
        for (business, what), (n, fen) in zip(BUSINESSES, ours):
            count = f.number32(f"{what} count")
            amount = f.number(f"{what} amount")
            if (count, amount) != (n, fen):
                differences.append(
                    f"{what}: the kiosk has {n} for {fen} fen, the backend {count} for {amount} fen")
            backend_totals.append(types.BusinessTotal(business=business, count=count, amount_fen=amount))
        f.end()
        return types.Reconciliation(matched=not differences, backend_totals=backend_totals,
                                    differences=differences)


class Billing(exports.Billing):
    """Contract 1.1. The DEMO backend has none of it: each call says so without sending anything."""

    def quote(self, card, purchase_):
        fail(types.BackendError_NotSupported())

    def bill_query(self, customer_number):
        fail(types.BackendError_NotSupported())

    def bill_pay(self, request):
        fail(types.BackendError_NotSupported())

    def bill_payment_status(self, terminal_id, kiosk_serial):
        fail(types.BackendError_NotSupported())

    def reconcile_period(self, report):
        fail(types.BackendError_NotSupported())
