"""push_to_hub / from_pretrained end to end through the real huggingface_hub client, against a Hub-protocol HTTP
server on 127.0.0.1 (tests/hub_server.py) that stands in for huggingface.co, which these machines cannot reach.

The client runs in a subprocess with HF_ENDPOINT pointing at the server (set before huggingface_hub is imported,
as a user would), so nothing in this test process' configuration leaks into it.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from hub_server import HubServer

pytestmark = pytest.mark.slow  # runs a Hub server and a client process


CLIENT = textwrap.dedent(
    """
    import json, sys, torch, timm
    from hf_fcr import FictitiousClassRemover

    def edited_remover():
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
        remover = FictitiousClassRemover(model, class_names=["a", "b", "c"])
        x = torch.rand(12, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        feats = remover.extract_features([{"image": x, "label": torch.arange(12) % 3}])
        return remover, feats

    def same(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    out = {}
    # 1. a base checkpoint pushed with timm, then a full edited checkpoint pushed with hf-fcr
    remover, feats = edited_remover()
    timm.models.push_to_hf_hub(remover.model, "tester/base", safe_serialization=True)
    remover.base_model_name_or_path = "tester/base"
    remover.remove_class("b", feats, r=0.5)
    remover.push_to_hub("tester/edited", token="hf_secret_token_123")
    pulled = FictitiousClassRemover.from_pretrained("tester/edited")
    out["full_identical"] = same(pulled.model, remover.model)
    out["full_edits"] = len(pulled.edits)
    pulled.revert()
    base = FictitiousClassRemover.from_pretrained("hf-hub:tester/base")
    out["revert_gives_base"] = same(pulled.model, base.model)
    # 2. the tiny artifact: edits only, re-applied to the base fetched from the same server
    remover.push_to_hub("tester/edits-only", edits_only=True)
    tiny = FictitiousClassRemover.from_pretrained("tester/edits-only")
    out["edits_only_identical"] = same(tiny.model, remover.model)
    # 3. a timm checkpoint's weights are downloaded with the caller's token and cache_dir
    again = FictitiousClassRemover.from_pretrained(
        "hf-hub:tester/base", token="hf_pull_token_456", cache_dir=sys.argv[1] if len(sys.argv) > 1 else "pull-cache"
    )
    out["token_pull_identical"] = same(again.model, base.model)
    # 4. a head-level edit (class-balanced retraining of the head), full and edits only
    fixed = FictitiousClassRemover.from_pretrained("hf-hub:tester/base")
    fixed.base_model_name_or_path = "tester/base"
    x = torch.rand(30, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    val = fixed.extract_features([{"image": x, "label": torch.arange(30) % 3}])
    fixed.neutralize_spurious(val, val, attribute_column=None, method="class_balanced", val_attribute_column=None)
    fixed.push_to_hub("tester/head-full")
    fixed.push_to_hub("tester/head-edits", edits_only=True)
    pulled = FictitiousClassRemover.from_pretrained("tester/head-full")
    out["head_full_identical"] = same(pulled.model, fixed.model)
    pulled.revert()
    out["head_revert_gives_base"] = same(pulled.model, base.model)
    tiny = FictitiousClassRemover.from_pretrained("tester/head-edits")
    out["head_edits_only_identical"] = same(tiny.model, fixed.model)
    print(json.dumps(out))
    """
)


def test_push_then_pull_through_a_local_hub(tmp_path):
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_XET="1")
        proc = subprocess.run(
            [sys.executable, "-c", CLIENT], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result == {
            "full_identical": True,
            "full_edits": 1,
            "revert_gives_base": True,
            "edits_only_identical": True,
            "token_pull_identical": True,
            "head_full_identical": True,
            "head_revert_gives_base": True,
            "head_edits_only_identical": True,
        }
        assert set(hub.state.repos) == {
            "tester/base", "tester/edited", "tester/edits-only", "tester/head-full", "tester/head-edits"
        }  # fmt: skip
        assert sorted(hub.state.repos["tester/edits-only"]) == ["README.md", "fcr_config.json"]
        assert sorted(hub.state.repos["tester/head-edits"]) == ["README.md", "fcr_config.json", "fcr_head.safetensors"]
        assert {"README.md", "fcr_config.json", "model.safetensors", "config.json"} <= set(
            hub.state.repos["tester/edited"]
        )
        # the token authenticates requests but is never written into any uploaded file
        for repo in hub.state.repos.values():
            for data in repo.values():
                assert b"hf_secret_token_123" not in data
        for path in tmp_path.rglob("*"):  # nor anywhere on disk: HF_HOME, caches, the working folder
            if path.is_file():
                assert b"hf_secret_token_123" not in path.read_bytes(), path
        assert any(
            "hf_secret_token_123" in headers.get("authorization", headers.get("Authorization", ""))
            for _, _, _, headers in hub.state.requests
        )
        pulled_weights = [
            headers
            for method, path, _, headers in hub.state.requests
            if "tester/base/resolve" in path and path.endswith("model.safetensors") and method == "GET"
        ]
        assert pulled_weights  # the timm weights came through the Hub client, with the caller's token
        assert any("hf_pull_token_456" in h.get("authorization", h.get("Authorization", "")) for h in pulled_weights)
