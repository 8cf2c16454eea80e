"""The OAuth side of the emulator: password and refresh grants, HS256 access tokens, revocation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs

from sync.emulator.replies import JSON, NO_STORE, Reply, error_reply, json_reply

# The quick start's curl sends the literal "x-www-form-urlencoded"; the real server takes it.
FORM_TYPES = ("application/x-www-form-urlencoded", "x-www-form-urlencoded")
AUDIENCE = "ids.resource.1"
CLAIM_SCOPES = ["ids.scope", "openid", "profile", "offline_access"]
JWT_HEADER = {"alg": "HS256", "typ": "at+jwt"}


@dataclass(frozen=True)
class _Grant:
    """What a refresh token stands for: the client, the partner and the original login."""

    client_id: str
    auth_time: int
    partner_id: str


@dataclass
class Login:
    """One partner account the authority knows: its OAuth client and its user."""

    client_id: str
    email: str
    password: str
    partner_id: str


def parse_form(content_type: str | None, body: bytes) -> dict[str, list[str]] | None:
    """The form fields of a token request, or None when it is not form-encoded UTF-8."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in FORM_TYPES:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_qs(text, keep_blank_values=True)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


class TokenAuthority:
    """Issues and checks tokens for the demo partner account (and any added with add_login);
    thread-safe. The constructor's credentials are the first login's; `client_id`, `email`,
    `password` and `partner_id` keep naming it."""

    def __init__(
        self,
        *,
        client_id: str,
        email: str,
        password: str,
        partner_id: str,
        lifetime_seconds: int,
        issue_refresh_tokens: bool,
        rotate_refresh_tokens: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.email = email
        self.password = password
        self.partner_id = partner_id
        self.lifetime_seconds = lifetime_seconds
        self.issue_refresh_tokens = issue_refresh_tokens
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.issuer = ""
        self._clock = clock
        # A fresh key per instance: tokens from another run or instance fail the signature check.
        self._key = secrets.token_bytes(32)
        self._user_id = str(uuid.uuid4())
        self._lock = threading.Lock()
        self._access: dict[str, str] = {}  # jti -> "valid" | "revoked" | "expired"
        self._refresh: dict[str, _Grant] = {}
        self._others: list[Login] = []

    def add_login(self, login: Login) -> None:
        """Another partner account, with a client of its own."""
        with self._lock:
            self._others.append(login)

    def _logins(self) -> list[Login]:
        with self._lock:
            first = Login(self.client_id, self.email, self.password, self.partner_id)
            return [first, *self._others]

    def handle(
        self, query: dict[str, str], content_type: str | None, body: bytes
    ) -> tuple[Reply, str]:
        """Answer POST /oauth/token.

        Returns:
            The reply and the outcome: "password", "refresh" or "rejected".
        """
        form = parse_form(content_type, body)
        if form is None:
            description = "body must be application/x-www-form-urlencoded UTF-8"
            return _reject(400, "invalid_request", description)
        # RFC 6749 §3.2: parameters must not repeat; an empty one counts as absent.
        for name, values in form.items():
            if len(values) > 1:
                return _reject(400, "invalid_request", f"parameter {name} is repeated")
        fields = {name: values[0] for name, values in form.items() if values[0]}
        for name in ("grant_type", "client_id"):
            if name not in fields:
                return _reject(400, "invalid_request", f"missing parameter: {name}")
        logins = [
            login
            for login in self._logins()
            if hmac.compare_digest(fields["client_id"].encode(), login.client_id.encode())
        ]
        if not logins:
            return _reject(401, "invalid_client", "unknown client_id")
        partner_id = query.get("partnerId")
        if partner_id is not None and all(partner_id != login.partner_id for login in logins):
            description = f"partnerId {partner_id} does not match the partner of this client"
            return _reject(400, "invalid_request", description)
        grant_type = fields["grant_type"]
        if grant_type == "password":
            return self._password_grant(fields, logins)
        if grant_type == "refresh_token":
            return self._refresh_grant(fields)
        description = f"grant_type {grant_type} is not supported"
        return _reject(400, "unsupported_grant_type", description)

    def _password_grant(self, fields: dict[str, str], logins: list[Login]) -> tuple[Reply, str]:
        for name in ("email", "password"):
            if name not in fields:
                return _reject(400, "invalid_request", f"missing parameter: {name}")
        for login in logins:
            email_ok = fields["email"].casefold() == login.email.casefold()
            password_ok = hmac.compare_digest(fields["password"].encode(), login.password.encode())
            if email_ok and password_ok:
                grant = _Grant(fields["client_id"], int(self._clock()), login.partner_id)
                return _token_reply(self._issue(grant, None)), "password"
        return _reject(400, "invalid_grant", "invalid username or password")

    def _refresh_grant(self, fields: dict[str, str]) -> tuple[Reply, str]:
        if "refresh_token" not in fields:
            return _reject(400, "invalid_request", "missing parameter: refresh_token")
        refresh_token = fields["refresh_token"]
        with self._lock:
            grant = self._refresh.get(refresh_token)
            if grant is None or grant.client_id != fields["client_id"]:
                return _reject(400, "invalid_grant", "invalid or revoked refresh token")
            reused: str | None = refresh_token
            if self.rotate_refresh_tokens:
                del self._refresh[refresh_token]
                reused = None
        return _token_reply(self._issue(grant, reused)), "refresh"

    def _issue(self, grant: _Grant, refresh_token: str | None) -> dict[str, object]:
        """A registered access token in the quick start's response shape.

        Args:
            grant: who logged in and when.
            refresh_token: the one to hand back again; None mints and registers a new one.
        """
        access_token, jti = self._sign(grant)
        response: dict[str, object] = {
            "access_token": access_token,
            "expires_in": self.lifetime_seconds,
            "token_type": "Bearer",
        }
        with self._lock:
            self._access[jti] = "valid"
            if self.issue_refresh_tokens:
                if refresh_token is None:
                    refresh_token = secrets.token_hex(32).upper()
                    self._refresh[refresh_token] = grant
                response["refresh_token"] = refresh_token
        response["scope"] = self._scope()
        return response

    def sample_response(self) -> dict[str, object]:
        """A well-formed token response whose access token was never registered, so is refused."""
        access_token, _ = self._sign(_Grant(self.client_id, int(self._clock()), self.partner_id))
        response: dict[str, object] = {
            "access_token": access_token,
            "expires_in": self.lifetime_seconds,
            "token_type": "Bearer",
        }
        if self.issue_refresh_tokens:
            response["refresh_token"] = secrets.token_hex(32).upper()
        response["scope"] = self._scope()
        return response

    def _scope(self) -> str:
        # offline_access is what a refresh token is issued for.
        return "comm100 offline_access" if self.issue_refresh_tokens else "comm100"

    def _sign(self, grant: _Grant) -> tuple[str, str]:
        """A new HS256 JWT carrying the reference sample's claims, and its jti."""
        now = int(self._clock())
        jti = secrets.token_hex(16).upper()
        claims: dict[str, object] = {
            "nbf": now,
            "exp": now + self.lifetime_seconds,
            "iss": self.issuer,
            "aud": AUDIENCE,
            "client_id": grant.client_id,
            "sub": self._user_id,
            "auth_time": grant.auth_time,
            "idp": "local",
            "userId": self._user_id,
            "partnerId": grant.partner_id,
            "role": "User",
            "jti": jti,
            "iat": now,
            "scope": CLAIM_SCOPES,
            "amr": ["pwd"],
        }
        signing_input = f"{_b64encode(_compact(JWT_HEADER))}.{_b64encode(_compact(claims))}"
        signature = hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{_b64encode(signature)}", jti

    def partner_of(self, authorization: str | None) -> str:
        """The partner of a bearer token that check_bearer accepted."""
        token = (authorization or "").strip().partition(" ")[2].strip()
        claim = self._claims(token).get("partnerId")
        return str(claim) if claim is not None else self.partner_id

    def check_bearer(self, authorization: str | None) -> str | None:
        """Why the Authorization header does not grant access, or None when it does."""
        if not authorization:
            return "missing bearer token"
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "authorization scheme must be Bearer"
        try:
            claims = self._claims(token.strip())
        except ValueError as exc:
            return str(exc)
        jti, exp = claims.get("jti"), claims.get("exp")
        with self._lock:
            state = self._access.get(jti) if isinstance(jti, str) else None
        if state is None:
            return "unknown access token"
        if state == "revoked":
            return "access token revoked"
        if state == "expired" or not isinstance(exp, int) or exp <= self._clock():
            return "access token expired"
        return None

    def _claims(self, token: str) -> dict[str, object]:
        """The verified payload of one of our JWTs; ValueError says what is wrong with it."""
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("malformed access token")
        try:
            header = json.loads(_b64decode(parts[0]))
            claims = json.loads(_b64decode(parts[1]))
            signature = _b64decode(parts[2])
        except ValueError as exc:  # bad base64, bad UTF-8 and bad JSON are all ValueErrors
            raise ValueError("malformed access token") from exc
        if header != JWT_HEADER or not isinstance(claims, dict):
            raise ValueError("malformed access token")
        signing_input = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
        expected = hmac.new(self._key, signing_input, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise ValueError("invalid token signature")
        return claims

    def revoke_access(self) -> None:
        with self._lock:
            self._access = dict.fromkeys(self._access, "revoked")

    def expire_access(self) -> None:
        # A revoked token stays revoked, so the 401 keeps saying why.
        with self._lock:
            for jti, state in self._access.items():
                if state == "valid":
                    self._access[jti] = "expired"

    def revoke_refresh(self) -> None:
        with self._lock:
            self._refresh.clear()


def _token_reply(response: dict[str, object]) -> Reply:
    return json_reply(200, response, content_type=JSON, headers=NO_STORE)


def _reject(status: int, error: str, description: str) -> tuple[Reply, str]:
    reply = error_reply(status, error, description, content_type=JSON, headers=NO_STORE)
    return reply, "rejected"
