"""Schemathesis hooks for tests/api/check_api.sh: sign every channel request, and reach real data.

Signing (ARCHITECTURE.md, "Channel REST contract"): X-Channel-Id, X-Timestamp (unix seconds),
X-Nonce and X-Signature = hex(HMAC-SHA256(secret, METHOD \\n PATH?QUERY \\n TIMESTAMP \\n NONCE \\n
hex(SHA256(body)))). The signature is computed on the request exactly as it goes on the wire (a
`requests` auth callable runs after the URL and the body are encoded), with a fresh nonce per
request, so shrinking and re-running a case stay valid. Every POST carries an Idempotency-Key: the
generated one is replaced by a fresh key (a reused key with another body is a legitimate 409 that
would hide the backends); a negative case that leaves the header out keeps it out.

Real data: the OpenAPI document cannot say which ids exist (its schemas list the required fields
and the key patterns the services check, but no id is real), so most generated requests end in 404
or a business refusal. To reach
the success paths too, about half of the generated cases of the operations below get ids and
well-formed fields seeded by check_api.sh (customers with points and coupons, locked redemptions,
QR tokens, the demo campaigns); the rest stay as generated. Operations this file does not know
(new rows in the route table) are tested as generated, signed all the same.

Environment (set by check_api.sh): MKT_API_CHANNEL_ID, MKT_API_CHANNEL_SECRET, MKT_API_SEED_FILE
("coupon<TAB>customer<TAB>code", "redemption<TAB>id", "qr<TAB>token<TAB>customer" lines),
MKT_API_CUSTOMERS and MKT_API_CAMPAIGNS (comma-separated), MKT_API_CHANNEL_CODE (mobile_banking).
"""

import hashlib
import hmac
import os
import time
import uuid

import requests
import schemathesis

CHANNEL_ID = os.environ["MKT_API_CHANNEL_ID"]
SECRET = os.environ["MKT_API_CHANNEL_SECRET"].encode()
CHANNEL_CODE = os.environ.get("MKT_API_CHANNEL_CODE", "mobile_banking")

COUPONS = []  # (customer_id, coupon_code)
REDEMPTIONS = []
QR_TOKENS = []  # (token, customer_id)
if os.environ.get("MKT_API_SEED_FILE"):
    with open(os.environ["MKT_API_SEED_FILE"], encoding="utf-8") as seed_file:
        for line in seed_file:
            fields = line.rstrip("\n").split("\t")
            if fields[0] == "coupon" and len(fields) == 3:
                COUPONS.append((fields[1], fields[2]))
            elif fields[0] == "redemption" and len(fields) == 2:
                REDEMPTIONS.append(fields[1])
            elif fields[0] == "qr" and len(fields) == 3:
                QR_TOKENS.append((fields[1], fields[2]))
CUSTOMERS = sorted(
    {c for c, _ in COUPONS} | set(filter(None, os.environ.get("MKT_API_CUSTOMERS", "").split(",")))
)
CAMPAIGNS = list(filter(None, os.environ.get("MKT_API_CAMPAIGNS", "").split(",")))


class ChannelSignature(requests.auth.AuthBase):
    """Signs the prepared request (method, path with query as sent, body bytes)."""

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        timestamp = str(int(time.time()))
        nonce = uuid.uuid4().hex
        canonical = "\n".join(
            [request.method, request.path_url, timestamp, nonce, hashlib.sha256(body).hexdigest()]
        )
        request.headers["X-Channel-Id"] = CHANNEL_ID
        request.headers["X-Timestamp"] = timestamp
        request.headers["X-Nonce"] = nonce
        request.headers["X-Signature"] = hmac.new(
            SECRET, canonical.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        return request


def _as_dict(value):
    return dict(value) if isinstance(value, dict) else {}


# What a realistic request of each known operation looks like, given seeded values picked for the
# case. Each returns the new (path_parameters, query, body); None keeps the generated part.
def _wallet(d):
    return {"customer_id": d["customer"]}, None, None


def _customer_lists(d):
    return {"customer_id": d["customer"]}, {"channel": CHANNEL_CODE}, None


def _participate(d):
    body = {"customer_id": d["customer"], "channel": CHANNEL_CODE}
    return {"campaign_id": d["campaign"]}, None, body


def _lock(d):
    customer, code = d["coupon"]
    order = {"order_id": "ORD-" + d["n"], "amount_fen": "10000", "channel": CHANNEL_CODE}
    return None, None, {"coupon_code": code, "customer_id": customer, "order": order}


def _redemption_action(d):
    return {"redemption_id": d["redemption"]}, None, {"reason": "check-api"}


def _qr(d):
    customer, code = d["coupon"]
    return {"coupon_code": code}, None, {"customer_id": customer}


def _qr_redeem(d):
    token, customer = d["qr"]
    body = {
        "token": token,
        "merchant_id": "M0001",
        "terminal_id": "T01",
        "order_amount_fen": "10000",
        "order_id": "ORD-" + d["n"],
        "customer_id": customer,
    }
    return None, None, body


def _event(d):
    body = {
        "source_event_id": "EV-" + d["n"],
        "event_type": "card.activated",
        "customer_id": d["customer"],
        "amount_fen": "5000",
    }
    return None, None, body


def _tracking(d):
    event = {
        "client_event_id": "TRK-" + d["n"],
        "customer_id": d["customer"],
        "action": "EXPOSURE",
        "placement": "home_banner",
        "page": "home",
    }
    if d["campaign"]:
        event["campaign_id"] = d["campaign"]
    return None, None, {"events": [event]}


REALISTIC = {
    ("GET", "/v1/customers/{customer_id}/wallet"): _wallet,
    ("GET", "/v1/customers/{customer_id}/campaigns"): _customer_lists,
    ("GET", "/v1/customers/{customer_id}/coupons"): _customer_lists,
    ("POST", "/v1/campaigns/{campaign_id}/participations"): _participate,
    ("POST", "/v1/redemptions"): _lock,
    ("POST", "/v1/redemptions/{redemption_id}:confirm"): _redemption_action,
    ("POST", "/v1/redemptions/{redemption_id}:cancel"): _redemption_action,
    ("POST", "/v1/redemptions/{redemption_id}:reverse"): _redemption_action,
    ("POST", "/v1/coupons/{coupon_code}/qr"): _qr,
    ("POST", "/v1/qr-redemptions"): _qr_redeem,
    ("POST", "/v1/events"): _event,
    ("POST", "/v1/tracking"): _tracking,
}


def _seed_case(case):
    """Puts seeded ids into about half of the cases of a known operation, deterministically.

    The choice is a hash of what was generated, so re-running or shrinking a case sees the same
    request (the hooks must not draw randomness of their own).
    """
    make = REALISTIC.get((case.method.upper(), case.path))
    if make is None or not COUPONS:
        return
    digest = hashlib.sha256(
        repr((case.path_parameters, case.query, case.body)).encode("utf-8", "surrogatepass")
    ).digest()
    if digest[0] % 2:
        return
    number = int.from_bytes(digest[1:9], "big")
    drawn = {
        "customer": CUSTOMERS[number % len(CUSTOMERS)],
        "coupon": COUPONS[number % len(COUPONS)],
        "redemption": REDEMPTIONS[number % len(REDEMPTIONS)] if REDEMPTIONS else None,
        "qr": QR_TOKENS[number % len(QR_TOKENS)] if QR_TOKENS else None,
        "campaign": CAMPAIGNS[number % len(CAMPAIGNS)] if CAMPAIGNS else None,
        "n": str(number % 10**12),
    }
    needs = {_redemption_action: "redemption", _qr_redeem: "qr", _participate: "campaign"}
    if make in needs and drawn[needs[make]] is None:
        return
    path, query, body = make(drawn)
    if path is not None:
        case.path_parameters = {**_as_dict(case.path_parameters), **path}
    if query is not None:
        case.query = {**_as_dict(case.query), **query}
    if body is not None:
        case.body = body


@schemathesis.hook
def before_call(context, case, kwargs):
    """Seeds ids, gives a POST a fresh Idempotency-Key, and signs the request when it is sent.

    Edits made here are seen by schemathesis (it re-judges whether the case is still a negative
    one). A negative case that left the required Idempotency-Key out keeps it out: the gateway must
    refuse it.
    """
    if not case.path.startswith("/v1/"):
        return
    _seed_case(case)
    headers = case.headers
    if case.method.upper() == "POST" and headers is not None and "Idempotency-Key" in headers:
        headers["Idempotency-Key"] = "chk-" + uuid.uuid4().hex
    kwargs["auth"] = ChannelSignature()
