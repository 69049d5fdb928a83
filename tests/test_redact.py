"""common/redact.py: no secret survives, benign data is untouched, redaction is idempotent."""

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge_cli.common import redact
from bridge_cli.common.redact import (
    fingerprint,
    is_secret_header,
    is_secret_param,
    redact_headers,
    redact_text,
    redact_url,
    redact_value,
)

OPENAI = "sk-proj-Q7fT2mZkW9xLpR4vN8bYc3HdJ6sA1eGu"
ANTHROPIC = "sk-ant-api03-Xk3J9qLm2WpZ7rT5vB8nC4yH6dF1gS0a-Qw2Er5Ty"
GOOGLE = "AIzaSyD3kF7mQ2pX9wL4zR8tB6nV1cH5jG0sYeU"
GITHUB = "ghp_R2d7Kq9LmX4pW8zT3vB6nC1yH5jF0sGaEuQi"
GITHUB_PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCD"
SLACK = "xoxb-2048163953-4096327906-Zq8Lm3Xp7Wk2Rt5V"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
PLAIN = "Zq8Lm3Xp7Wk2Rt5Vb9Nc4Yh6Df1Gs0Ae"
KEYS = [OPENAI, ANTHROPIC, GOOGLE, GITHUB, GITHUB_PAT, SLACK, JWT, PLAIN]

MARK_RE = re.compile(r"\[redacted:sha256:[0-9a-f]{8}\]")


def assert_no_leak(secret: str, out: str) -> None:
    """No run of 6 characters from the secret, past a 4-char public prefix, is in out."""
    for i in range(4, len(secret) - 5):
        assert secret[i : i + 6] not in out, f"{secret[i : i + 6]!r} of the secret leaked: {out}"


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "proxy-authorization",
        "x-api-key",
        "X-API-KEY",
        "api-key",
        "x-goog-api-key",
        "cookie",
        "Set-Cookie",
        "xi-api-key",
        "x-portkey-api-key",
        "x-auth-token",
        "x-amz-security-token",
        "ocp-apim-subscription-key",
        "x-client-secret",
        "x_api_key",
    ],
)
def test_is_secret_header_recognises_credential_headers(name):
    assert is_secret_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "content-type",
        "user-agent",
        "accept",
        "host",
        "anthropic-version",
        "openai-organization",
        "x-request-id",
        "x-ratelimit-remaining-tokens",
        "anthropic-ratelimit-input-tokens-remaining",
        "idempotency-key",
        "retry-after",
        "www-authenticate",
    ],
)
def test_is_secret_header_leaves_ordinary_headers_alone(name):
    assert not is_secret_header(name)


@pytest.mark.parametrize(
    "name",
    [
        "key", "KEY", "api_key", "apikey", "api-key", "Api-Key", "token", "access_token",
        "auth", "sig", "signature", "secret", "password", "client_secret", "x-api-key",
        "X-Amz-Signature", "X-Amz-Security-Token", "refresh_token", "subscription-key",
    ],
)  # fmt: skip
def test_is_secret_param_recognises_key_like_params(name):
    assert is_secret_param(name)


@pytest.mark.parametrize(
    "name", ["model", "alt", "q", "page", "max_tokens", "page_token", "limit", "stream"]
)
def test_is_secret_param_leaves_ordinary_params_alone(name):
    assert not is_secret_param(name)


# --- headers -------------------------------------------------------------------------


@pytest.mark.parametrize("secret", KEYS)
@pytest.mark.parametrize(
    "name", ["authorization", "x-api-key", "api-key", "x-goog-api-key", "proxy-authorization"]
)
def test_redact_headers_hides_every_secret(name, secret):
    for value in (secret, f"Bearer {secret}"):
        [(out_name, out)] = redact_headers([(name, value)])
        assert out_name == name
        assert_no_leak(secret, out)
        assert MARK_RE.search(out)


def test_redact_headers_keeps_scheme_and_public_prefix_only():
    [(_, out)] = redact_headers([("Authorization", f"Bearer {OPENAI}")])
    assert out == f"Bearer sk-…[redacted:sha256:{fingerprint(OPENAI)}]"
    [(_, out)] = redact_headers([("x-goog-api-key", GOOGLE)])
    assert out == f"AIza…[redacted:sha256:{fingerprint(GOOGLE)}]"
    [(_, out)] = redact_headers([("x-api-key", PLAIN)])
    assert out == f"[redacted:sha256:{fingerprint(PLAIN)}]"


def test_same_key_has_same_fingerprint_in_any_header_and_different_keys_differ():
    out = dict(
        redact_headers(
            [
                ("authorization", f"Bearer {ANTHROPIC}"),
                ("x-api-key", ANTHROPIC),
                ("api-key", OPENAI),
            ]
        )
    )
    assert out["authorization"] == "Bearer " + out["x-api-key"]
    assert out["x-api-key"] != out["api-key"]


def test_short_secret_shows_no_prefix():
    [(_, out)] = redact_headers([("x-api-key", "sk-short1")])
    assert out == f"[redacted:sha256:{fingerprint('sk-short1')}]"


def test_basic_auth_credentials_are_hidden():
    [(_, out)] = redact_headers([("Authorization", "Basic dXNlcjpodW50ZXIyaHVudGVyMg==")])
    assert out.startswith("Basic [redacted:sha256:")
    assert "dXNlcjpo" not in out


def test_unknown_scheme_word_is_not_kept():
    # a passphrase's first word is not a scheme: it must not survive
    [(_, out)] = redact_headers([("x-api-key", "correct horse battery staple")])
    assert "correct" not in out and "staple" not in out


def test_cookies_keep_their_names_and_hide_their_values():
    [(_, out)] = redact_headers([("Cookie", "session=abc123def456; theme=dark42")])
    assert out.startswith("session=[redacted:sha256:") and "; theme=[redacted:sha256:" in out
    assert "abc123" not in out and "dark42" not in out
    [(_, out)] = redact_headers([("set-cookie", "sid=s3cr3tv4lu3; Path=/; HttpOnly; Secure")])
    assert out == f"sid=[redacted:sha256:{fingerprint('s3cr3tv4lu3')}]; Path=/; HttpOnly; Secure"


def test_benign_headers_are_untouched():
    pairs = [
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.54.0"),
        ("x-ratelimit-remaining-tokens", "149984"),
        ("anthropic-version", "2023-06-01"),
        ("idempotency-key", "stainless-python-retry-5f0c1a52"),
        ("accept", "*/*"),
        ("x-request-id", "req_8c1f0e0b9e2b4d1f"),
        ("content-length", "1234"),
    ]
    assert redact_headers(pairs) == pairs


def test_key_shapes_in_benign_headers_and_urls_in_referer_are_redacted():
    out = dict(
        redact_headers([("x-debug", f"using {GITHUB}"), ("referer", f"https://a.b/?key={PLAIN}")])
    )
    assert_no_leak(GITHUB, out["x-debug"])
    assert_no_leak(PLAIN, out["referer"])


def test_empty_secret_header_stays_empty():
    assert redact_headers([("authorization", "")]) == [("authorization", "")]


def test_redact_headers_is_idempotent():
    pairs = [
        ("authorization", f"Bearer {OPENAI}"),
        ("x-api-key", GOOGLE),
        ("cookie", "a=1234567; b=7654321"),
        ("set-cookie", "sid=abcdefg; Path=/"),
        ("content-type", "application/json"),
    ]
    once = redact_headers(pairs)
    assert redact_headers(once) == once


def test_redact_value_is_idempotent_for_every_marker_form():
    for value in (f"Bearer {OPENAI}", GOOGLE, PLAIN, f"Token {JWT}"):
        once = redact_value("authorization", value)
        assert redact_value("authorization", once) == once


# --- URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "param", ["key", "api_key", "apikey", "api-key", "token", "access_token", "AUTH", "sig",
              "signature", "secret", "password", "client_secret", "x-api-key", "Key"],
)  # fmt: skip
def test_redact_url_hides_key_like_params(param):
    url = f"https://api.example.com/v1/models?alt=json&{param}={PLAIN}&page=2"
    out = redact_url(url)
    assert_no_leak(PLAIN, out)
    assert out.startswith("https://api.example.com/v1/models?alt=json&")
    assert out.endswith("&page=2")
    assert redact_url(out) == out


def test_redact_url_percent_decodes_before_fingerprinting():
    out = redact_url("https://x.test/?key=ab%2Bcd%2Fef%3D%3Dgh")
    assert out == f"https://x.test/?key=[redacted:sha256:{fingerprint('ab+cd/ef==gh')}]"


def test_redact_url_hides_userinfo_password_and_keeps_user():
    out = redact_url("https://alice:hunter2hunter2@db.example.com:5432/x?y=1")
    assert out.startswith("https://alice:[redacted:sha256:")
    assert out.endswith("@db.example.com:5432/x?y=1")
    assert "hunter2" not in out


def test_redact_url_hides_token_used_as_user_name():
    out = redact_url(f"https://{GITHUB}@github.com/org/repo.git")
    assert_no_leak(GITHUB, out)
    assert out.endswith("@github.com/org/repo.git")


def test_redact_url_hides_tokens_in_fragment_and_key_shapes_in_path():
    out = redact_url(f"https://app.test/cb#access_token={PLAIN}&state=xyz")
    assert_no_leak(PLAIN, out)
    assert out.endswith("&state=xyz")
    out = redact_url(f"https://hooks.test/{OPENAI}/send")
    assert_no_leak(OPENAI, out)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1/chat/completions",
        "https://api.example.com/v1/models?alt=json&page=2&max_tokens=10",
        "http://127.0.0.1:8081/v1/messages?beta=true",
        "https://x.test/?",
        "https://x.test/#frag",
        "/v1/relative/path?q=1",
        "",
        "not a url at all",
        "http://[::1",
    ],
)
def test_redact_url_leaves_urls_without_secrets_byte_for_byte(url):
    assert redact_url(url) == url


# --- free text -----------------------------------------------------------------------


@pytest.mark.parametrize("secret", KEYS)
@pytest.mark.parametrize(
    "template",
    [
        "Authorization: Bearer {s}",
        "authorization: {s}",
        "x-api-key: {s}",
        "proxy-authorization: Basic {s}",
        "127.0.0.1:5555: GET https://api.test/v1?key={s}&alt=json HTTP/2.0",
        "sent token={s} to upstream",
        "Bearer {s}",
        "headers={{'authorization': 'Bearer {s}', 'host': 'api.test'}}",
        '{{"x-api-key": "{s}", "model": "gpt-4o"}}',
        "Headers[(b'x-api-key', b'{s}'), (b'host', b'api.test')]",
        "cookie: session={s}; theme=dark",
        "upstream https://user:{s}@proxy.test:3128 refused",
        "authorization={s} host=api.test",
        "api_key: {s}",
    ],
)
def test_redact_text_hides_secret_in_log_line(template, secret):
    line = template.format(s=secret)
    out = redact_text(line)
    assert_no_leak(secret, out)
    assert redact_text(out) == out


@pytest.mark.parametrize("secret", [OPENAI, ANTHROPIC, GOOGLE, GITHUB, GITHUB_PAT, SLACK, JWT])
def test_redact_text_finds_well_known_key_shapes_anywhere(secret):
    out = redact_text(f"error: the key {secret}, was rejected")
    assert_no_leak(secret, out)
    assert out.startswith("error: the key ") and out.endswith(", was rejected")


@pytest.mark.parametrize(
    "line",
    [
        "127.0.0.1:51234: POST https://api.openai.com/v1/chat/completions HTTP/2.0",
        "    << 200 OK 1.2k",
        "server connect api.anthropic.com:443 (160.79.104.10:443)",
        "client disconnect",
        "content-type: application/json",
        "task-runner finished in 0.25s",
        "x-ratelimit-remaining-tokens: 149984",
        "max_tokens=4096 model=gpt-4o",
    ],
)
def test_redact_text_leaves_ordinary_log_lines_alone(line):
    assert redact_text(line) == line


def test_redact_text_redacts_several_secrets_on_one_line():
    out = redact_text(f"GET /v1?key={GOOGLE}&token={PLAIN} via Bearer {GITHUB}, cc {OPENAI}")
    for secret in (GOOGLE, PLAIN, GITHUB, OPENAI):
        assert_no_leak(secret, out)
    assert out.startswith("GET /v1?key=AIza…[redacted:sha256:")


TOKEN_CHARS = st.characters(
    whitelist_categories=("Lu", "Ll", "Nd"), whitelist_characters="-_.~+/=", max_codepoint=127
)


@given(st.text(TOKEN_CHARS, min_size=12, max_size=60))
def test_property_no_secret_header_value_survives(secret):
    for name in ("authorization", "x-api-key", "cookie", "set-cookie"):
        value = f"sid={secret}" if "cookie" in name else secret
        [(_, out)] = redact_headers([(name, value)])
        assert secret[-8:] not in out
        assert redact_headers([(name, out)]) == [(name, out)]


@given(st.text(TOKEN_CHARS, min_size=12, max_size=60))
def test_property_no_key_param_survives_in_url_or_text(secret):
    # an auth scheme's own name ("AWS4-HMAC-SHA256 ...") is kept as the scheme word
    assume(secret.lower() not in {s.lower() for s in redact._SCHEMES})
    url = f"https://api.test/v1?alt=json&api_key={secret}"
    for out in (redact_url(url), redact_text(f"GET {url} HTTP/1.1")):
        assert secret[-8:] not in out


@given(st.text(max_size=200))
def test_property_redaction_is_idempotent_on_any_text(text):
    once = redact_text(text)
    assert redact_text(once) == once
    once = redact_url(text)
    assert redact_url(once) == once


def test_fingerprint_is_short_stable_sha256_hex():
    assert fingerprint("abc") == "ba7816bf"
    assert fingerprint("abc", 16) == "ba7816bf8f01cfea"
    assert fingerprint("abc") != fingerprint("abd")


# --- the credential-name rule (issue 21) -----------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["X-Custom-Auth", "x-session-id", "X-Session", "x-my-secret-value", "x-user-key-id",
     "x-refresh-token-v2", "cookie2", "X-OAuth-Bearer", "x_custom_auth"],
)  # fmt: skip
def test_every_header_named_like_a_credential_is_redacted(name):
    [(out_name, out)] = redact_headers([(name, PLAIN)])
    assert out_name == name and MARK_RE.search(out)
    assert_no_leak(PLAIN, out)
    assert redact_headers([(name, out)]) == [(name, out)]


@pytest.mark.parametrize(
    "name",
    ["x-ratelimit-limit-tokens", "anthropic-ratelimit-output-tokens-reset", "idempotency-key",
     "sec-websocket-key", "www-authenticate", "proxy-authenticate", ":authority"],
)  # fmt: skip
def test_token_counts_nonces_and_challenges_are_not_credentials(name):
    assert not is_secret_header(name)


def test_a_credential_named_header_is_redacted_in_log_text_too():
    for line in (f"headers=[(b'x-custom-auth', b'{PLAIN}')]", f"x-session-id: {PLAIN}",
                 f'{{"X-Custom-Auth": "{PLAIN}"}}'):
        out = redact_text(line)
        assert_no_leak(PLAIN, out)
        assert redact_text(out) == out


def test_replace_key_shapes_hides_a_key_in_a_url_path():
    path = "/v1/models/sk-live-abcdef0123456789abcdef/x"
    assert redact.replace_key_shapes(path, lambda k: "[credential]") == "/v1/models/[credential]/x"
    assert_no_leak("sk-live-abcdef0123456789abcdef", redact_url("https://a.test" + path))
    assert redact.replace_key_shapes("/v1/models/gpt-4o", lambda k: "?") == "/v1/models/gpt-4o"
