"""mobilesd inspect --bundle B: validate a bundle (schema, checksums) and print what it holds."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--bundle", required=True, help="bundle folder written by `mobilesd export`")
    p.add_argument("--json", action="store_true", help="print the validated manifest instead of the tables")


def _io(tensors: list[dict]) -> str:
    return ", ".join(f"{t['name']} {'x'.join(map(str, t['shape']))}" for t in tensors)


def _gpu(g: dict) -> str:
    gpu = g.get("gpu")
    if not gpu:
        lj = g.get("litert_js")
        return f"js:{lj['accelerator']}" if lj else "-"
    if gpu.get("skipped"):
        return "skipped"
    state = "full" if gpu["fully_accelerated"] else "PART"
    if gpu.get("output_rel_l2") is not None:
        return f"{state} {gpu['output_rel_l2']:.1e}"
    return f"{state} (not run)" if gpu.get("not_run") else f"{state} FAILED" if not gpu.get("passed") else state


def run(args) -> int:
    import json

    from mobilesd.bundle import load_bundle

    bundle = load_bundle(args.bundle)   # schema + every checksum; raises with the file and field named
    m = bundle.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    q = m.get("quantization")
    print(f"bundle {m['bundle_id']} at {bundle.root}: format {m['format_version']}, target {m['target']}, "
          f"precision {m['precision']}" + (f", quantized {q['method']} W{q['weight_bits']}A{q['act_bits']}" if q else ""))
    print(f"image {m['image']['width']}x{m['image']['height']}, latent {m['latent']['channels']}x"
          f"{m['latent']['height']}x{m['latent']['width']}, prediction {m['source']['prediction_type']}, "
          f"cfg {m['cfg']['mode']} (unet_batch {m['cfg']['unet_batch']}), schedulers "
          f"{', '.join(m['scheduler']['supported'])} (default {m['scheduler']['default']})")
    rows = [("graph", "file", "MiB", "precision", "host rel.L2 (bound)", "GPU (rel.L2)")]
    for g in m["graphs"]:
        v = g["verification"]
        rows.append((g["name"], g["file"], f"{g['size_bytes'] / 2**20:.2f}", g["precision"],
                     f"{v['rel_l2']:.1e} ({v['threshold']:g}, {v['runtime']})", _gpu(g)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("inputs -> outputs:")
    for g in m["graphs"]:
        aliases = g["meta"].get("aliases") or {}
        print(f"  {g['name']}: {_io(g['inputs'])} -> {_io(g['outputs'])}"
              + (f"; aliases {aliases}" if aliases else ""))
    e2e = m["verification"]["end_to_end"]
    psnr = "identical" if e2e["psnr_db"] is None else f"PSNR {e2e['psnr_db']:.1f} dB"
    print(f"end to end ({e2e['runtime']} vs PyTorch, {e2e['settings']['steps']} {e2e['settings']['scheduler']} "
          f"steps): mean abs {e2e['mean_abs']:.2e} (bound {e2e['threshold']:g}), {psnr}")
    print(f"files: {len(m['files'])}, {sum(f['size'] for f in m['files'].values()) / 2**20:.2f} MiB, "
          "all SHA-256 checksums match; manifest valid against the schema")
    return 0
