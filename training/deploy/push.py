"""Upload a run folder to a Hugging Face Hub model repo, in one commit.

    python -m training.deploy.push runs/vgg16-128 acme/pneumo-vgg16 [--revision BRANCH] [--tag TAG] [--private]

Everything in the folder but checkpoints/ goes up; the commit message names
the validation figures from config.json. The token comes from HF_TOKEN or
`hf auth login`, through huggingface_hub; it is never printed. A failed push
changes nothing in the local folder.
"""

import argparse
import json
import sys
from pathlib import Path

from pneumo.model.run_folder import CONFIG, NOT_PUSHED, REQUIRED

# Checkpoints hold optimizer state and every epoch's model: big and not for serving.
IGNORE = NOT_PUSHED


class PushError(Exception):
    """The run folder cannot be pushed (missing files, tag taken)."""


def commit_message(config):
    v = config.get("validation", {})
    split = config.get("data", {}).get("selection_split", "val")
    figures = [f"{label} {v[key]:.2f}" for key, label in (("accuracy", "accuracy"), ("roc_auc", "ROC AUC"))
               if v.get(key) is not None]
    return f"{config.get('name', 'pneumo model')}: {split} " + ", ".join(figures)


def commit_description(config):
    v = config.get("validation", {})
    lines = [f"{key}: {value:.4f}" for key, value in v.items() if isinstance(value, (int, float))]
    return "\n".join(lines + [f"command: {config['command']}" if config.get("command") else ""]).strip()


def push_run(run_folder, repo, revision=None, tag=None, private=False):
    """Create `repo` if needed, then commit the run folder to `revision`
    (default main; created from main when missing) and tag that commit.
    Returns huggingface_hub's CommitInfo (`.oid`, `.commit_url`)."""
    from huggingface_hub import HfApi

    folder = Path(run_folder)
    missing = [name for name in REQUIRED[::-1] if not (folder / name).is_file()]
    if missing:
        raise PushError(f"{folder} is not a run folder: missing {', '.join(missing)}")
    config = json.loads((folder / CONFIG).read_text())
    message = commit_message(config)

    api = HfApi()
    api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
    # Check the tag before committing, so a taken tag does not leave a stray commit.
    if tag and any(ref.name == tag for ref in api.list_repo_refs(repo).tags):
        raise PushError(f"tag {tag!r} already exists in {repo}; tags pin one version, pick a new one")
    if revision and revision != "main":
        api.create_branch(repo, branch=revision, exist_ok=True)
    info = api.upload_folder(repo_id=repo, folder_path=folder, revision=revision, ignore_patterns=IGNORE,
                             commit_message=message, commit_description=commit_description(config))
    if tag:
        api.create_tag(repo, tag=tag, revision=info.oid, tag_message=message)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.deploy.push", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_folder", help="a run folder written by training.train")
    p.add_argument("repo", help="Hub model repo, org/name")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    p.add_argument("--tag", default=None, help="tag the new commit, e.g. v1")
    p.add_argument("--private", action="store_true", help="create the repo private")
    args = p.parse_args(argv)
    try:
        info = push_run(args.run_folder, args.repo, revision=args.revision, tag=args.tag, private=args.private)
    except PushError as e:
        print(f"push failed: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # HTTP answers (OSErrors) and the transport's own errors (connection refused)
        print(f"push failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(f"pushed {args.run_folder} to {args.repo}: commit {info.oid}" + (f", tag {args.tag}" if args.tag else ""))
    print(info.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
