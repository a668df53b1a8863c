"""Deploy the app to a Hugging Face Space, in one commit.

    python -m training.deploy.space OWNER/NAME [--model-repo REPO [--model-revision REV]] [--no-mcp] [--private]

Uploads what the Space runs, from this checkout: app.py, pneumo/ with the
bundled model (the fallback whenever the Hub model cannot be had),
requirements.txt, README.md (its front matter is the Space's settings),
examples/ and the README's screenshots. huggingface_hub stores the model
through LFS, as Spaces require for files over 10 MB. Files a previous deploy
left that are no longer part of the app are deleted in the same commit.

Then it sets the Space's variables: GRADIO_MCP_SERVER=True (the MCP tool;
False with --no-mcp) and, with --model-repo, PNEUMO_MODEL_REPO and
PNEUMO_MODEL_REVISION; without it those two are removed, so that the Space
serves the bundled model. The token comes from HF_TOKEN or `hf auth login`.

It lives beside training.deploy.push (which publishes models): both publish from
a checkout. pneumo/ is the installed library and holds no app code to send.
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPACE_FILES = ["app.py", "requirements.txt", "README.md", "pneumo/*", "ui/*", "examples/*", "docs/*.md", "docs/screenshot*.png"]
# Local build products: bytecode, and the int8 model, which is rebuilt or pulled from a model repo.
IGNORED = ["*__pycache__*", "*.pyc", "*.int8.onnx", "pneumo/bundled_model/int8.json"]
REQUIRED = ["app.py", "requirements.txt", "README.md", "pneumo/bundled_model/model.keras"]
MODEL_VARIABLES = ("PNEUMO_MODEL_REPO", "PNEUMO_MODEL_REVISION")


class DeployError(Exception):
    """The checkout cannot be deployed as it is (missing files, wrong front matter)."""


def space_settings(root=ROOT) -> dict:
    """The README's front matter, checked against what the Space will run."""
    from huggingface_hub import metadata_load

    missing = [name for name in REQUIRED if not (root / name).is_file()]
    if missing:
        raise DeployError(f"{root} lacks {', '.join(missing)}: deploy from a full checkout")
    settings = metadata_load(root / "README.md") or {}
    pinned = re.search(r"^gradio(?:\[[\w,]+\])?==(\S+)", (root / "requirements.txt").read_text(), re.MULTILINE)
    expected = {"sdk": "gradio", "sdk_version": pinned and pinned.group(1), "app_file": "app.py"}
    wrong = [f"{key}: {settings.get(key)!r} (expected {value!r})" for key, value in expected.items()
             if str(settings.get(key)) != str(value)]
    if not settings.get("python_version"):
        wrong.append("python_version is missing")
    if wrong:
        raise DeployError("README.md's front matter does not match the app: " + "; ".join(wrong))
    return settings


def deploy(space, model_repo=None, model_revision=None, mcp=True, private=False, root=ROOT):
    """Create or update `space`; returns huggingface_hub's CommitInfo (`.oid`, `.commit_url`)."""
    from huggingface_hub import HfApi

    if model_revision and not model_repo:
        raise DeployError("--model-revision needs --model-repo")
    space_settings(root)
    api = HfApi()
    api.create_repo(space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=space, repo_type="space", folder_path=root, allow_patterns=SPACE_FILES,
                             ignore_patterns=list(IGNORED), delete_patterns="*",
                             commit_message="Deploy the Pneumonia Detector app")
    set_variables(api, space, {"GRADIO_MCP_SERVER": str(mcp),
                               "PNEUMO_MODEL_REPO": model_repo,
                               "PNEUMO_MODEL_REVISION": model_revision if model_repo else None})
    return info


def set_variables(api, space, wanted):
    """Set each variable to its value; remove those whose value is None."""
    present = api.get_space_variables(space)
    for key, value in wanted.items():
        if value is not None:
            api.add_space_variable(space, key, value)
        elif key in present:
            api.delete_space_variable(space, key)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.deploy.space", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("space", help="the Space, OWNER/NAME (created if missing)")
    p.add_argument("--model-repo", help="serve this Hub model repo (PNEUMO_MODEL_REPO) instead of the bundled model")
    p.add_argument("--model-revision", help="branch, tag or commit of --model-repo (PNEUMO_MODEL_REVISION)")
    p.add_argument("--no-mcp", dest="mcp", action="store_false", help="do not serve the MCP tool")
    p.add_argument("--private", action="store_true", help="create the Space private")
    args = p.parse_args(argv)
    try:
        info = deploy(args.space, args.model_repo, args.model_revision, mcp=args.mcp, private=args.private)
    except DeployError as e:
        print(f"deploy failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # HTTP answers (OSErrors) and the transport's own errors (connection refused)
        print(f"deploy failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"deployed to Space {args.space}: commit {info.oid}")
    print(info.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
