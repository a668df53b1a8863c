"""Push to and pull from a Hub, with the real huggingface_hub client over HTTP
against local servers (tests/hub_fixtures.py). Pulls run in fresh
subprocesses: HF_ENDPOINT is read when huggingface_hub is imported, and each
test gets its own HF_HOME so caches never leak between tests."""

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tests.conftest import ROOT
from tests.hub_fixtures import free_port, hub_env, hub_repo, local_hub  # noqa: F401 (fixtures)

# download_run alone: no TensorFlow, so quick.
PULL = textwrap.dedent("""
    import json, sys, time
    from pneumo.model.hub import HubError, download_run
    started = time.monotonic()
    try:
        folder, commit = download_run(sys.argv[1], sys.argv[2])
        out = {"folder": folder, "commit": commit, "files": sorted(p.name for p in folder.iterdir()),
               "name": json.loads((folder / "config.json").read_text())["name"]}
    except HubError as e:
        out = {"error": str(e)}
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out, default=str))
""")

# The app's path: load_model (Hub, else the bundled model), then one prediction per spec.
LOAD = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from pathlib import Path
    from PIL import Image
    from pneumo.model import loading
    from pneumo.analysis import analyse
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).convert("RGB")
    for spec in json.loads(sys.argv[1]):
        loaded = loading.load_model(**spec)
        a = analyse(image, loaded, with_heatmap=False)
        print(json.dumps({"identity": loaded.identity, "probabilities": (a.research or a.as_dict())["probabilities"]}))
""")


def run(args, env, timeout=600):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def pull(endpoint, hf_home, repo, revision="main", **env):
    result = run([sys.executable, "-c", PULL, repo, revision], hub_env(endpoint, hf_home, **env), timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def load(endpoint, hf_home, specs, **env):
    result = run([sys.executable, "-c", LOAD, json.dumps(specs)], hub_env(endpoint, hf_home, **env))
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def push(endpoint, folder, repo, *options, hf_home):
    return run([sys.executable, "-m", "training.deploy.push", str(folder), repo, *options],
               hub_env(endpoint, hf_home), timeout=300)


def pushed_commit(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split("commit ")[1].split(",")[0].split()[0]


def copy_run(tiny_run, tmp_path, name):
    """The tiny run under another model name: a second version to push."""
    folder = shutil.copytree(tiny_run, tmp_path / name, ignore=shutil.ignore_patterns("checkpoints"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "name": name}, indent=2))
    return folder


def folder_state(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_round_trip_gives_the_same_predictions(local_hub, hub_repo, tiny_run, tmp_path):
    """tiny run -> push CLI -> git repo -> olah -> fresh process -> same probabilities, bit for bit."""
    before = folder_state(tiny_run)
    commit = pushed_commit(push(local_hub.endpoint, tiny_run, hub_repo, hf_home=tmp_path / "push"))
    assert folder_state(tiny_run) == before

    git = local_hub.git_repo(hub_repo)
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit], cwd=git, capture_output=True,
                           text=True, check=True).stdout.split()
    assert "model.keras" in files and "README.md" in files and not any(f.startswith("checkpoints") for f in files)
    message = subprocess.run(["git", "log", "-1", "--format=%s", commit], cwd=git, capture_output=True,
                             text=True, check=True).stdout.strip()
    validation = json.loads((tiny_run / "config.json").read_text())["validation"]
    assert f"accuracy {validation['accuracy']:.2f}, ROC AUC {validation['roc_auc']:.2f}" in message

    local, hub = load(local_hub.endpoint, tmp_path / "pull", [{"path": str(tiny_run)}, {"repo": hub_repo}])
    assert hub["identity"]["source"] == "hub", hub["identity"]["fallback_reason"]
    assert hub["identity"]["commit"] == commit
    assert hub["identity"]["sha256"] == local["identity"]["sha256"]
    assert hub["probabilities"] == local["probabilities"]


def test_a_tag_or_commit_pins_a_version_while_branches_move(local_hub, hub_repo, tiny_run, tmp_path):
    hf_home = tmp_path / "hf"
    first = pushed_commit(push(local_hub.endpoint, copy_run(tiny_run, tmp_path, "first"), hub_repo,
                               "--tag", "v1", hf_home=hf_home))
    second = pushed_commit(push(local_hub.endpoint, copy_run(tiny_run, tmp_path, "second"), hub_repo,
                                hf_home=hf_home))
    branch = pushed_commit(push(local_hub.endpoint, copy_run(tiny_run, tmp_path, "branch"), hub_repo,
                                "--revision", "experiment", hf_home=hf_home))
    assert len({first, second, branch}) == 3

    for revision, commit, name in [("v1", first, "first"), (first, first, "first"), (first[:7], first, "first"),
                                   ("main", second, "second"), ("experiment", branch, "branch")]:
        got = pull(local_hub.endpoint, hf_home, hub_repo, revision)
        assert (got.get("commit"), got.get("name")) == (commit, name), (revision, got)

    taken = push(local_hub.endpoint, tiny_run, hub_repo, "--tag", "v1", hf_home=hf_home)
    assert taken.returncode == 1 and "already exists" in taken.stderr
    assert pull(local_hub.endpoint, hf_home, hub_repo, "main")["commit"] == second  # no stray commit


def test_a_stale_parent_commit_is_refused(local_hub, hub_repo, tiny_run, tmp_path):
    code = textwrap.dedent("""
        import sys
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError
        api, repo = HfApi(), sys.argv[1]
        api.create_repo(repo)
        old = api.create_commit(repo, [CommitOperationAdd("a.txt", b"1")], commit_message="one").oid
        api.create_commit(repo, [CommitOperationAdd("a.txt", b"2")], commit_message="two", parent_commit=old)
        try:
            api.create_commit(repo, [CommitOperationAdd("a.txt", b"3")], commit_message="3", parent_commit=old)
        except HfHubHTTPError as e:
            print(e.response.status_code)
    """)
    result = run([sys.executable, "-c", code, hub_repo], hub_env(local_hub.endpoint, tmp_path / "hf"), timeout=120)
    assert result.stdout.strip() == "412", result.stderr


def test_offline_uses_the_warm_cache(local_hub, hub_repo, tiny_run, tmp_path):
    hf_home = tmp_path / "hf"
    commit = pushed_commit(push(local_hub.endpoint, tiny_run, hub_repo, hf_home=tmp_path / "push"))
    cold = pull(local_hub.endpoint, hf_home, hub_repo, HF_HUB_OFFLINE="1")
    assert "offline" in cold["error"] and "not in the cache" in cold["error"]

    online = pull(local_hub.endpoint, hf_home, hub_repo)
    assert online["commit"] == commit
    assert {"config.json", "model.keras", "metrics.json", "README.md"} <= set(online["files"])
    # The ONNX models come too, so that a model from the Hub serves without TensorFlow.
    onnx_files = {p.name for p in tiny_run.glob("*.onnx")} | {"onnx.json"}
    assert "model.float.onnx" in onnx_files and onnx_files <= set(online["files"])
    offline = pull(local_hub.endpoint, hf_home, hub_repo, HF_HUB_OFFLINE="1")
    assert (offline.get("commit"), offline.get("folder")) == (commit, online["folder"]), offline
    # The Hub down: the cache answers too, without huggingface_hub's half-minute of retries.
    down = pull(f"http://127.0.0.1:{free_port()}", hf_home, hub_repo)
    assert down.get("commit") == commit and down["seconds"] < 5, down


def test_hub_problems_fall_back_to_the_bundled_model_with_the_reason(local_hub, hub_repo, tiny_run, tmp_path):
    pushed_commit(push(local_hub.endpoint, tiny_run, hub_repo, hf_home=tmp_path / "push"))
    no_model = hub_repo + "-card-only"  # a repo without model.keras
    upload = textwrap.dedent("""
        import sys
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo(sys.argv[1])
        api.upload_file(path_or_fileobj=sys.argv[2], path_in_repo="config.json", repo_id=sys.argv[1])
    """)
    result = run([sys.executable, "-c", upload, no_model, str(tiny_run / "config.json")],
                 hub_env(local_hub.endpoint, tmp_path / "push"), timeout=120)
    assert result.returncode == 0, result.stderr
    local_hub.corrupt_downloads_of(hub_repo, "model.keras")

    cases = [({"repo": "acme/no-such-model"}, "acme/no-such-model not found"),
             ({"repo": hub_repo, "revision": "no-such-branch"}, "revision 'no-such-branch' not found"),
             ({"repo": no_model}, "model.keras not found"),
             ({"repo": hub_repo}, "failed its integrity check")]
    loaded = load(local_hub.endpoint, tmp_path / "hf", [spec for spec, _ in cases])
    for (spec, reason), got in zip(cases, loaded):
        assert got["identity"]["source"] == "bundled", spec
        assert reason in got["identity"]["fallback_reason"], (spec, got["identity"]["fallback_reason"])
        assert spec["repo"] in got["identity"]["fallback_reason"]


def test_server_down_fails_fast_with_the_reason(tiny_run, tmp_path):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    got = pull(endpoint, tmp_path / "hf", "acme/pneumo")
    assert "cannot be reached" in got["error"] and got["seconds"] < 5, got
    [loaded] = load(endpoint, tmp_path / "hf", [{"repo": "acme/pneumo"}])
    assert loaded["identity"]["source"] == "bundled"
    assert "cannot be reached" in loaded["identity"]["fallback_reason"]


def test_a_corrupt_cache_is_caught_and_healed(local_hub, hub_repo, tiny_run, tmp_path):
    hf_home = tmp_path / "hf"
    pushed_commit(push(local_hub.endpoint, tiny_run, hub_repo, hf_home=tmp_path / "push"))
    folder = pull(local_hub.endpoint, hf_home, hub_repo)["folder"]
    blob = (Path(folder) / "model.keras").resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    assert "integrity" in pull(local_hub.endpoint, hf_home, hub_repo, HF_HUB_OFFLINE="1")["error"]
    assert pull(local_hub.endpoint, hf_home, hub_repo).get("folder") == folder  # downloaded again


def test_a_failed_push_says_why_and_leaves_the_folder_alone(tiny_run, tmp_path):
    before = folder_state(tiny_run)
    down = push(f"http://127.0.0.1:{free_port()}", tiny_run, "acme/pneumo", hf_home=tmp_path / "hf")
    assert down.returncode == 1 and "push failed" in down.stderr
    assert folder_state(tiny_run) == before
    not_a_run = push("http://127.0.0.1:9", tmp_path, "acme/pneumo", hf_home=tmp_path / "hf")
    assert not_a_run.returncode == 1 and "missing model.keras" in not_a_run.stderr


def test_the_model_card_metadata_parses_with_the_metrics(local_hub, hub_repo, tiny_run, tmp_path):
    pushed_commit(push(local_hub.endpoint, tiny_run, hub_repo, hf_home=tmp_path / "push"))
    folder = pull(local_hub.endpoint, tmp_path / "hf", hub_repo)["folder"]
    card = ModelCard.load(f"{folder}/README.md")
    assert card.data.library_name == "keras" and card.data.model_name
    metrics = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    validation = json.loads((tiny_run / "config.json").read_text())["validation"]
    split = json.loads((tiny_run / "config.json").read_text())["data"]["selection_split"]
    for metric in ("accuracy", "roc_auc", "sensitivity", "specificity"):
        assert metrics[(split, metric)] == pytest.approx(validation[metric], abs=1e-4)
    assert card.data.to_dict()["model-index"][0]["results"]
