"""Mean ± std over a multi-trial run whose trials were evaluated one by one.

`python -m jlml_tf.evaluate --run_dir=RUN` evaluates every RUN/trial_NN/ and writes the summary;
when the trials were evaluated separately (each as it finished training, or on several
machines, or training was stopped before its last trial), this writes the same summary, RUN/results<suffix>.json / .md / cmc<suffix>.png,
from their RUN/trial_NN/results<suffix>.json:

    python benchmarks/summarise_trials.py --run_dir=runs/probe/paper_width_160x64/continue_cuhk01 \
        --suffix=_xqda_map
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def summarise(run_dir: pathlib.Path, suffix: str) -> dict[str, pathlib.Path]:
    from jlml_tf.evaluate import write_results

    files = sorted(run_dir.glob(f"trial_*/results{suffix}.json"))
    if not files:
        raise ValueError(f"{run_dir}: no trial_NN/results{suffix}.json")
    documents = [json.loads(f.read_text()) for f in files]
    methods = {name for d in documents for name in d["results"]}
    if len(methods) != 1:
        raise ValueError(f"{run_dir}: the trials' files hold different methods {sorted(methods)}")
    (method,) = methods
    trials = [entry for d in documents for entry in d["results"][method]["trials"]]
    first = documents[0]
    title = " / ".join((first.get("title") or "").split(" / ")[:2]) or None
    # trials named as their files name them ("trial0"), as a multi-trial evaluation names them
    names = [(d.get("title") or "").split(" / ")[2:3] or [f.parent.name]
             for d, f in zip(documents, files)]
    return write_results(run_dir, suffix, {method: trials}, paper=first.get("paper"),
                         title=title, extra={"trials": [n[0] for n in names]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run_dir", required=True, help="a multi-trial run (RUN/trial_NN/)")
    parser.add_argument("--suffix", required=True, help="the evaluation's suffix, e.g. _xqda_map; "
                        "'' for training's own results.json")
    args = parser.parse_args(argv)
    suffix = args.suffix if args.suffix.startswith("_") or not args.suffix else "_" + args.suffix
    try:
        paths = summarise(pathlib.Path(args.run_dir), suffix)
    except ValueError as e:
        parser.error(str(e))
    print(paths["markdown"].read_text() + f"-> {paths['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
