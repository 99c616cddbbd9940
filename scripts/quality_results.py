#!/usr/bin/env python3
"""Quality results: perplexity and KL divergence against bits per weight, one line per method.

    scripts/quality_results.py collect OUT.json EVAL.json...   # `bitloom eval --json_out` reports -> rows
    scripts/quality_results.py merge OUT.json RESULTS.json...   # several sweeps' results -> one
    scripts/quality_results.py plot RESULTS.json [--out docs/quality.png] [--table docs/quality_table.md]

`collect` turns `bitloom eval` reports (each run with --reference=the fp16 import) into result rows. The
model, method and bits come from the artifact name, `<model>--<method>--<bits>` (for example
`smollm2--ldlq-var--2.5`), and the measured bits per weight from the report; the reference's perplexity
is kept per model. `merge` joins results of one protocol and one reference (a later file's row
replaces an earlier one of the same artifact), so points measured in separate runs share a table.
`plot` draws, for each model, perplexity (log scale, reference dashed) and KL divergence (nats/token,
log scale) against bits per weight, one line per method, into one PNG, and writes a markdown table.
Needs matplotlib (pinned in scripts/python-requirements.txt) for `plot` only.

RESULTS.json:
  {"protocol": "...", "reference": {"<model>": {"name": ..., "perplexity": ...}},
   "rows": [{"model", "method", "bits", "bits_per_weight", "perplexity", "kl_divergence",
             "top1_agreement", "artifact"}]}
"""
import argparse
import json
import sys
from collections import defaultdict


def collect(out_path, eval_paths):
    rows, reference, protocols = [], {}, set()
    for path in eval_paths:
        with open(path) as f:
            report = json.load(f)
        name = report["model"]["name"]
        parts = name.split("--")
        if len(parts) != 3:
            sys.exit(f"{path}: artifact name {name!r} is not <model>--<method>--<bits>")
        model, method, bits = parts[0], parts[1], float(parts[2])
        protocols.add(report["protocol"]["description"])
        row = {"model": model, "method": method, "bits": bits, "artifact": name,
               "bits_per_weight": report["model"].get("bits_per_weight"),
               "perplexity": report["model"]["perplexity"],
               "top1_accuracy": report["model"]["top1_accuracy"]}
        if "kl_divergence" in report:
            row["kl_divergence"] = report["kl_divergence"]["mean"]
            row["top1_agreement"] = report["top1_agreement"]
        if "reference" in report:
            reference[model] = {"name": report["reference"]["name"],
                                "perplexity": report["reference"]["perplexity"]}
        rows.append(row)
    if len(protocols) > 1:
        sys.exit(f"reports use different protocols: {sorted(protocols)}")
    rows.sort(key=lambda r: (r["model"], r["method"], r["bits"]))
    result = {"protocol": protocols.pop() if protocols else "", "reference": reference, "rows": rows}
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"{len(rows)} rows -> {out_path}")


def merge(out_path, result_paths):
    protocol, reference, rows = None, {}, {}
    for path in result_paths:
        with open(path) as f:
            results = json.load(f)
        if protocol is not None and results["protocol"] != protocol:
            sys.exit(f"{path}: protocol {results['protocol']!r} differs from {protocol!r}")
        protocol = results["protocol"]
        for model, ref in results.get("reference", {}).items():
            if model in reference and abs(reference[model]["perplexity"] - ref["perplexity"]) > 1e-9:
                sys.exit(f"{path}: reference of {model} scores {ref['perplexity']}, not "
                         f"{reference[model]['perplexity']}: not the same fp16 import")
            reference[model] = ref
        for row in results["rows"]:
            rows[row["artifact"]] = row
    merged = sorted(rows.values(), key=lambda r: (r["model"], r["method"], r["bits"]))
    with open(out_path, "w") as f:
        json.dump({"protocol": protocol or "", "reference": reference, "rows": merged}, f, indent=2)
        f.write("\n")
    print(f"{len(merged)} rows -> {out_path}")


def table(results):
    lines = [f"Protocol: {results.get('protocol', '')}", "",
             "| model | method | bits | bits/weight (stored) | perplexity | vs fp | KL (nats/token) | top-1 agreement |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        ref = results.get("reference", {}).get(r["model"], {}).get("perplexity")
        vs = f"{100 * (r['perplexity'] / ref - 1):+.1f}%" if ref else ""
        kl = f"{r['kl_divergence']:.4f}" if "kl_divergence" in r else ""
        agree = f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else ""
        bpw = f"{r['bits_per_weight']:.3f}" if r.get("bits_per_weight") else ""
        lines.append(f"| {r['model']} | {r['method']} | {r['bits']:g} | {bpw} | {r['perplexity']:.3f} | {vs} | "
                     f"{kl} | {agree} |")
    return "\n".join(lines) + "\n"


def plot(results_path, out_png, out_table):
    with open(results_path) as f:
        results = json.load(f)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_model = defaultdict(lambda: defaultdict(list))
    for r in results["rows"]:
        by_model[r["model"]][r["method"]].append(r)
    models = sorted(by_model)
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 4 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        ax_ppl, ax_kl = axes[i]
        for method, rows in sorted(by_model[model].items()):
            rows.sort(key=lambda r: r["bits"])
            bits = [r.get("bits_per_weight") or r["bits"] for r in rows]
            ax_ppl.plot(bits, [r["perplexity"] for r in rows], marker="o", label=method)
            kl_rows = [(b, r["kl_divergence"]) for b, r in zip(bits, rows) if "kl_divergence" in r]
            if kl_rows:
                ax_kl.plot(*zip(*kl_rows), marker="o", label=method)
        ref = results.get("reference", {}).get(model, {}).get("perplexity")
        if ref:
            ax_ppl.axhline(ref, color="gray", linestyle="--", label=f"fp16 reference ({ref:.2f})")
        ax_ppl.set_yscale("log")
        ax_ppl.set_title(f"{model}: perplexity")
        ax_kl.set_yscale("log")
        ax_kl.set_title(f"{model}: KL(fp ‖ quantized), nats/token")
        for ax in (ax_ppl, ax_kl):
            ax.set_xlabel("bits per weight (stored, scales included)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    fig.suptitle(results.get("protocol", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    print(f"chart -> {out_png}")
    if out_table:
        with open(out_table, "w") as f:
            f.write(table(results))
        print(f"table -> {out_table}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("out")
    c.add_argument("reports", nargs="+")
    m = sub.add_parser("merge")
    m.add_argument("out")
    m.add_argument("results", nargs="+")
    p = sub.add_parser("plot")
    p.add_argument("results")
    p.add_argument("--out", default="docs/quality.png")
    p.add_argument("--table", default="")
    args = parser.parse_args()
    if args.command == "collect":
        collect(args.out, args.reports)
    elif args.command == "merge":
        merge(args.out, args.results)
    else:
        plot(args.results, args.out, args.table)


if __name__ == "__main__":
    main()
