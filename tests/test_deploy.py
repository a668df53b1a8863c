"""`python -m training.deploy.space`: the app to a Space on the tests' own Hub
(tests/hub_fixtures.py), with the real huggingface_hub client over HTTP."""

import hashlib
import subprocess
import sys
import uuid

import pytest
from huggingface_hub import HfApi, constants, metadata_load

from tests.conftest import ROOT
from tests.hub_fixtures import hub_env, local_hub  # noqa: F401 (fixtures)
from tests.hub_server import POINTER
from training.deploy.space import DeployError, space_settings


def deploy(local_hub, space, *options, hf_home):
    result = subprocess.run([sys.executable, "-m", "training.deploy.space", space, *options], cwd=ROOT,
                            env=hub_env(local_hub.endpoint, hf_home), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout


def space_files(repo):
    return set(git(repo, "ls-tree", "-r", "--name-only", "main").decode().split("\n")) - {""}


@pytest.fixture
def space():
    return f"acme/detector-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def api(local_hub, monkeypatch):
    """The client in this process, for checks: it talks to the tests' Hub, so not offline
    (huggingface_hub reads HF_HUB_OFFLINE when imported)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return HfApi(endpoint=local_hub.endpoint)


def test_deploy_sends_what_the_space_runs_with_its_variables(local_hub, api, space, tmp_path):
    deploy(local_hub, space, "--model-repo", "acme/pneumo-vgg16", "--model-revision", "v1", hf_home=tmp_path)
    repo = local_hub.mirrors / "spaces" / space
    files = space_files(repo)
    wanted = {"app.py", "requirements.txt", "README.md", "docs/screenshot.png", "docs/screenshot-no-verdict.png",
              "docs/screenshot-phone.png", "pneumo/analysis.py",
              "pneumo/bundled_model/model.keras", "pneumo/bundled_model/config.json", "pneumo/bundled_model/ood.npz",
              "examples/child-normal.jpeg", "examples/adult.jpeg", "examples/README.md"}
    assert wanted <= files
    assert not [f for f in files if f.startswith(("tests/", "training/", "benchmarks/")) or "__pycache__" in f]
    assert git(repo, "show", "main:app.py") == (ROOT / "app.py").read_bytes()

    # The model went the Hub's way: an LFS pointer in git, the bytes in the LFS store.
    model = (ROOT / "pneumo" / "bundled_model" / "model.keras").read_bytes()
    oid = hashlib.sha256(model).hexdigest()
    assert git(repo, "show", "main:pneumo/bundled_model/model.keras").decode() == POINTER.format(oid=oid,
                                                                                                   size=len(model))
    assert (repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes() == model

    readme = tmp_path / "README.md"
    readme.write_bytes(git(repo, "show", "main:README.md"))
    settings = metadata_load(readme)
    assert settings["sdk"] == "gradio" and settings["app_file"] == "app.py"
    assert str(settings["sdk_version"]) == "6.31.0" and str(settings["python_version"]) == "3.11"

    variables = api.get_space_variables(space)
    assert {key: v.value for key, v in variables.items()} == {
        "GRADIO_MCP_SERVER": "True", "PNEUMO_MODEL_REPO": "acme/pneumo-vgg16", "PNEUMO_MODEL_REVISION": "v1"}


def test_a_second_deploy_replaces_the_first(local_hub, api, space, tmp_path):
    deploy(local_hub, space, "--model-repo", "acme/pneumo-vgg16", hf_home=tmp_path)
    api.upload_file(path_or_fileobj=b"left over", path_in_repo="old/notes.txt", repo_id=space, repo_type="space")
    deploy(local_hub, space, "--no-mcp", hf_home=tmp_path)
    repo = local_hub.mirrors / "spaces" / space
    assert "old/notes.txt" not in space_files(repo) and "app.py" in space_files(repo)
    variables = api.get_space_variables(space)
    assert {key: v.value for key, v in variables.items()} == {"GRADIO_MCP_SERVER": "False"}  # the bundled model


@pytest.mark.parametrize("front_matter, message", [
    ("sdk: docker\nsdk_version: 6.31.0\napp_file: app.py\npython_version: '3.11'", "sdk"),
    ("sdk: gradio\nsdk_version: 5.0.0\napp_file: app.py\npython_version: '3.11'", "sdk_version"),
    ("sdk: gradio\nsdk_version: 6.31.0\napp_file: app.py", "python_version"),
])
def test_front_matter_that_does_not_match_the_app_is_refused(tmp_path, front_matter, message):
    for name in ("app.py", "requirements.txt", "pneumo/bundled_model/model.keras"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes() if name == "requirements.txt" else b"")
    (tmp_path / "README.md").write_text(f"---\n{front_matter}\n---\n# App\n")
    with pytest.raises(DeployError, match=message):
        space_settings(tmp_path)


def test_the_checkouts_readme_is_a_valid_space_card():
    assert space_settings(ROOT)["title"] == "Pneumonia Detector"
