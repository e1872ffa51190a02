"""Measurement 5: delivery with a 2048-bit DKIM key against the same delivery unsigned, and the
CPU of one signature in-process (dkimpy's and OpenSSL's)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from measurements.delivery import DeliveryRun, OfflineDelivery, streamer_delivery
from report import Row, note_problems, verdict
from settings import DISTURBED, Run

SECTION = "5. DKIM signing"
METHOD = """\
5. DKIM signing: the delivery of 2, without and with a 2048-bit DKIM key, in alternating
   rounds; ceiling: the unsigned run. Also the CPU of one signature in-process, dkimpy's and
   OpenSSL's (what a C signer, e.g. the relay's, costs)."""


def dkim_key(path: Path, bits: int) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    return path


def signing_costs_ms(message: bytes, key_file: Path, count: int = 200) -> dict[str, float]:
    """CPU per signature, in-process: streamer's sign() (dkimpy's relaxed canonicalisation and
    hashing, the RSA step by OpenSSL), and the bare RSA-SHA256 signature by OpenSSL (cryptography) as
    the floor."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from streamer.config import DkimKeyConfig
    from streamer.dkim_signing import load_key, sign

    key = load_key(DkimKeyConfig(domain="acme.test", selector="bench", private_key_file=key_file), key_file.parent)
    started = time.process_time()
    for _ in range(count):
        sign(message, key)
    dkimpy = (time.process_time() - started) / count * 1000
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    started = time.process_time()
    for _ in range(count):
        private.sign(message[:2000], padding.PKCS1v15(), hashes.SHA256())
    return {"dkimpy": dkimpy, "openssl": (time.process_time() - started) / count * 1000}


async def measure(run: Run) -> None:
    """The same delivery as 2 (welcome emails into smtp-sink), without and with DKIM signing
    (2048-bit RSA), in alternating rounds; the unsigned run is the ceiling."""
    settings, report, sink_port, workdir = run.settings, run.report, run.sink_port, run.workdir
    section = SECTION
    print(f"\n{section}", flush=True)
    key_file = dkim_key(workdir / "dkim-2048.pem", 2048)
    signed_config = f"dkim: [{{domain: acme.test, selector: bench, private_key_file: {key_file}}}]"
    pairs: list[tuple[DeliveryRun, DeliveryRun]] = []
    count = max(300, settings.delivery_emails // 3)  # signed delivery is slow: keep the run short
    for round_number in range(settings.delivery_rounds):
        plain = await streamer_delivery(count, sink_port, workdir / f"dkim-off-{round_number}")
        signed = await streamer_delivery(
            count, sink_port, workdir / f"dkim-on-{round_number}", extra_config=signed_config
        )
        pairs.append((plain, signed))
        for label, delivered in (("without", plain), ("with", signed)):
            note_problems(report, section, f"round {round_number + 1} {label} DKIM", delivered.daemon.problems())
    clean = [(a, b) for a, b in pairs if max(a.foreign_load, b.foreign_load) <= DISTURBED] or pairs
    ratio = statistics.median(b.rate / a.rate for a, b in clean)
    report.rows.append(
        Row(
            "5. delivery with DKIM (RSA 2048)",
            f"{statistics.median(b.rate for _, b in clean):,.0f} emails/s",
            f"{statistics.median(a.rate for a, _ in clean):,.0f} emails/s (same, unsigned)",
            f"{ratio:.0%}",
            "report",
            verdict(None),
        )
    )
    for number, (plain, signed) in enumerate(pairs, 1):
        report.note(
            section,
            f"round {number}, {count:,} welcome emails each: unsigned {plain.rate:,.0f} emails/s "
            f"({plain.cpu_ms_per_email:.2f} ms "
            f"daemon CPU per email, other processes {plain.foreign_load:.0%} of core 0); signed "
            f"{signed.rate:,.0f} emails/s ({signed.cpu_ms_per_email:.2f} ms, other processes "
            f"{signed.foreign_load:.0%})",
        )
    message = await (await OfflineDelivery.load(pairs[0][0].daemon)).message()  # one unsigned welcome email
    costs = signing_costs_ms(message, key_file)
    extra = statistics.median(b.cpu_ms_per_email - a.cpu_ms_per_email for a, b in clean)
    report.note(
        section,
        "CPU per signature, in-process: streamer's sign() (dkimpy's canonicalisation and hashing, "
        f"RSA by OpenSSL) "
        f"{costs['dkimpy']:.2f} ms; the bare RSA-SHA256 signature by OpenSSL (cryptography) "
        f"{costs['openssl']:.2f} ms. Daemon CPU per email grew by {extra:.2f} ms with signing on. The "
        "signature is computed on the event loop: while it runs (one OpenSSL RSA signature and "
        "dkimpy's pure-Python canonicalisation per email) nothing else on the loop runs",
    )
