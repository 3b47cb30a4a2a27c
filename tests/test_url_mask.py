"""Credentials inside webhook URLs never shown by `edge config show` or /api/config (issue 20;
/api/config is checked against a running server in test_web_hardening.py)."""

from __future__ import annotations

import pytest
import yaml
from helpers import run_edge

from edge.urlmask import mask_url

SECRETS = {
    "https://hooks.slack.com/services/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":
        ("T0ABC1234", "B0DEF5678", "Xy9zQ7wVbN3mK2pL8sR4tU6v"),
    "https://discord.com/api/webhooks/123456789012345678/aBcD-eFgH_iJkLmNoPqRsTuVwXyZ0123":
        ("123456789012345678", "aBcD-eFgH_iJkLmNoPqRsTuVwXyZ0123"),
    "https://example.com/hook?token=hunter2&room=porch": ("hunter2",),
    "https://example.com/hook?api_key=k3y&x=1": ("k3y",),
    "https://example.com/h?secret=s&sig=abc&code=zz": ("=s&", "abc", "zz"),
    "https://alice:pa55@example.com/hook": ("alice", "pa55"),
    "http://10.0.0.2:8123/api/webhook/f00dbabe0123": ("f00dbabe0123",),
}


@pytest.mark.parametrize("url", SECRETS)
def test_secret_parts_are_masked(url):
    out = mask_url(url)
    for secret in SECRETS[url]:
        assert secret not in out, out
    assert out.split("/")[2].split("@")[-1] == url.split("/")[2].split("@")[-1]  # host kept


def test_plain_parts_are_kept():
    assert mask_url("https://example.com/api/v2/events?room=porch") == (
        "https://example.com/api/v2/events?room=porch")
    assert mask_url("/var/lib/edge/snaps") == "/var/lib/edge/snaps"


def test_config_show_masks_webhook_url_secrets(tmp_path):
    cfg = tmp_path / "edge.yaml"
    urls = list(SECRETS)
    cfg.write_text("outputs:\n" + "".join(f"  - webhook: {{url: '{u}'}}\n" for u in urls))
    r = run_edge("config", "show", cfg)
    assert r.returncode == 0, r.stderr
    for u in urls:
        for secret in SECRETS[u]:
            assert secret not in r.stdout
    shown = yaml.safe_load(r.stdout)["outputs"]
    assert shown[2]["webhook"]["url"] == "https://example.com/hook?token=***&room=porch"
