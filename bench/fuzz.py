"""The fuzz suite of tests/test_fuzz.py, run long: counts per input class and answers (not a test).

    python bench/fuzz.py [--examples N]

Runs every input class of tests/support/fuzzing.py against one running daemon (webhook bodies, depth
and numbers, mutated Auth0 bodies, headers/methods/paths, reset form GET and POST) with N
Hypothesis examples each, and the config loader with N texts; then checks /healthz and that a
normal signup sent afterwards still yields its verification email (real aiosmtpd catcher).
Prints the requests per class by answer (2xx, 4xx, 5xx, no answer) and the first request of
each class that got a 5xx or no answer. Exit status 1 if any did, or the daemon is unhealthy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from hypothesis import HealthCheck, given, settings  # noqa: E402

from streamer.config import ConfigError, parse_config  # noqa: E402

from support import fuzzing  # noqa: E402


def run(examples: int) -> int:
    fuzz = settings(
        max_examples=examples, deadline=None, database=None, derandomize=False, suppress_health_check=list(HealthCheck)
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as workdir, fuzzing.FuzzTarget(Path(workdir)) as target:
        auth = fuzzing._auth(fuzzing.GOOD_AUTH)  # noqa: SLF001
        classes = {
            "webhook: JSON bodies": fuzzing.webhook_json().map(
                lambda body: fuzzing.http_request(b"POST", b"/logs/acme", auth, body)
            ),
            "webhook: depth, numbers": fuzzing.webhook_deep().map(
                lambda body: fuzzing.http_request(b"POST", b"/logs/acme", auth, body)
            ),
            "webhook: mutated bodies": fuzzing.webhook_mutated().map(
                lambda body: fuzzing.http_request(b"POST", b"/logs/acme", auth, body)
            ),
            "webhook: headers": fuzzing.webhook_headers(),
            "reset form: GET": fuzzing.reset_get(),
            "reset form: POST": fuzzing.reset_post_strategy(target.csrf_pair()),
        }

        def fuzz_class(kind: str, strategy) -> None:
            @fuzz
            @given(strategy)
            def hit(request: bytes) -> None:
                target.hit(kind, request)  # counted; failures are reported below, not raised

            hit()

        for kind, strategy in classes.items():
            class_started = time.monotonic()
            fuzz_class(kind, strategy)
            print(
                f"{kind}: {sum(n for (k, _), n in target.counts.items() if k == kind)} requests "
                f"in {time.monotonic() - class_started:.0f} s",
                file=sys.stderr,
                flush=True,
            )

        config_outcomes: Counter[str] = Counter()

        @fuzz
        @given(fuzzing.config_texts(target.config_text))
        def load(text: str) -> None:
            try:
                parse_config(text, env={}, base_dir=Path(workdir))
                config_outcomes["loaded"] += 1
            except ConfigError:
                config_outcomes["clear error (ConfigError)"] += 1
            except Exception as exc:  # noqa: BLE001 - what the property forbids: counted and shown
                config_outcomes[f"other exception: {type(exc).__name__}"] += 1

        load()
        healthy = target.healthy()
        mailed = target.normal_event_is_mailed()
        tracebacks = target.tracebacks()

    outcomes = ["2xx", "4xx", "5xx", "no answer"]
    print(f"# fuzz: {examples} Hypothesis examples per class, {time.monotonic() - started:.0f} s\n")
    print("| input class | requests | " + " | ".join(outcomes) + " |")
    print("|---|---:|" + "---:|" * len(outcomes))
    kinds = list(dict.fromkeys(kind for kind, _ in target.counts))
    for kind in kinds:
        row = [target.counts[(kind, outcome)] for outcome in outcomes]
        print(f"| {kind} | {sum(row)} | " + " | ".join(str(n) for n in row) + " |")
    total = [sum(target.counts[(kind, outcome)] for kind in kinds) for outcome in outcomes]
    print(f"| **all HTTP** | {sum(total)} | " + " | ".join(str(n) for n in total) + " |")
    print(
        f"\nconfig loader: {sum(config_outcomes.values())} texts: "
        + ", ".join(f"{n} {what}" for what, n in sorted(config_outcomes.items()))
    )
    print(
        f"afterwards: /healthz {'200' if healthy else 'NOT OK'}; a normal signup's verification email "
        f"{'arrived' if mailed else 'DID NOT ARRIVE'}; tracebacks in the daemon's log: {len(tracebacks)}"
    )
    for line in tracebacks:
        print(f"\ntraceback logged: {line[:1500]}")
    for (kind, outcome), request in target.examples.items():
        print(f"\nfirst {outcome} for {kind}: {request[:600]!r}")
    bad = total[2] + total[3] + sum(n for what, n in config_outcomes.items() if what.startswith("other"))
    return 0 if bad == 0 and healthy and mailed and not tracebacks else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="Hypothesis examples per input class")
    sys.exit(run(parser.parse_args().examples))
