#!/bin/bash
# The one script for a GPU machine: proves the CUDA backend in a few minutes, from the bundle of
# tests/gpu/make_bundle.sh, on a bare machine (CUDA 13 driver, PyTorch 2.11 with its nvidia-*
# CUDA 13 wheels, no apt, no network). It
#   1. unpacks the bundle and points LD_LIBRARY_PATH at the CUDA libraries of PyTorch's wheels
#      (cuBLAS/cuBLASLt, cuDNN, nvrtc, NCCL: found by searching site-packages, whatever the
#      layout: nvidia/*/lib or nvidia/cu13/lib);
#   2. prints nvidia-smi;
#   3. runs, each under a timeout within an 8-minute budget (DEADLINE_S, default 465 s):
#        ops     test_gpu_ops: every Backend op on the GPU against the CPU, f32 and bf16, and
#                cuDNN attention against our kernel
#        smoke   smoke.sh: 20 steps GPU vs CPU, gpt2 and llama, fp32 and bf16
#        parity  parity.sh: 2 and 4 ranks sharing the GPU, (tp,dp) = (2,1) (1,2) (2,2), vs 1 rank
#        nccl    test_nccl: the NCCL communicator on device buffers against closed forms, its
#                host staging, and its watchdog (a rank that never joins; a stalled stream)
#        nccl_np2  test_nccl under mpirun -np 2: NCCL on the world with a GPU per rank (then a
#                rank that never issues a collective), else NCCL's refusal of two ranks on one
#                GPU reported and the MPI path (device buffers staged through the host) checked
#        ours    bench/gpu/bench_ours.py: our trainer, GPT-2 124M and Llama ~124M, bf16, T=1024
#        torch   bench/gpu/torch_baseline.py: the same models with torch.compile
#   4. prints ONE table: each op's max error, the smoke loss gaps, the parity gaps, tokens/s and
#      MFU for ours and torch.compile, and their ratio.
# Exit 0 when every step passed (or, on a machine without a GPU, every step skipped: the table
# is then marked "no GPU"), 1 otherwise. Logs stay in the work dir it names.
#
# DEVICE_CHECK_STEPS (space-separated step names) runs only those steps.
# Usage: device_check.sh [BUNDLE.tar.xz]     (default: ./chainrule-gpu.tar.xz beside this
#                                              script, else build-bundle/chainrule-gpu.tar.xz)
#        device_check.sh --unpacked DIR      (an already unpacked bundle: its root)
set -uo pipefail

START=$(date +%s)
DEADLINE=$((START + ${DEADLINE_S:-465}))
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/chainrule-device-check.XXXXXX")
LOGS=$WORK/logs
mkdir -p "$LOGS"
say() { echo "device_check: $*"; }

# ---- 1. the bundle ---------------------------------------------------------------------------
if [[ ${1:-} == --unpacked ]]; then
  B=$(cd "${2:?--unpacked DIR}" && pwd)
else
  bundle=${1:-}
  if [[ -z $bundle ]]; then
    for c in "$HERE/chainrule-gpu.tar.xz" "$HERE/../../build-bundle/chainrule-gpu.tar.xz" \
             "$PWD/build-bundle/chainrule-gpu.tar.xz" "$PWD/chainrule-gpu.tar.xz"; do
      [[ -f $c ]] && { bundle=$c; break; }
    done
  fi
  [[ -f ${bundle:-} ]] || { say "FAIL: no bundle (pass the path of chainrule-gpu.tar.xz)"; exit 1; }
  # Python's tarfile where tar has no xz (a bare image may lack xz-utils).
  tar -C "$WORK" -xJf "$bundle" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle" "$WORK" ||
    { say "FAIL: cannot unpack $bundle"; exit 1; }
  B=$WORK/chainrule-gpu
fi
say "bundle $B; work dir $WORK"
cat "$B/BUNDLE_INFO" 2>/dev/null
# The bundle is built on Debian 12 (glibc 2.36). Our binaries need less (BUNDLE_INFO names the
# most any bundled file needs); the bundled libstdc++/libgcc_s are what need 2.35-2.36. On an
# older glibc use the system's (Ubuntu 22.04's come from GCC 12, like ours).
need=$(sed -n 's/^needs glibc >= //p' "$B/BUNDLE_INFO" 2>/dev/null)
have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [[ -n $need && -n $have && $(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1) != "$need" ]]; then
  say "WARNING: glibc $have here, the bundle's libraries want up to $need: using this machine's"
  say "  libstdc++ and libgcc_s; Open MPI's libevent may still not load (then parity fails)"
  mkdir -p "$B/lib/unused"
  mv "$B/lib/libstdc++.so.6" "$B/lib/libgcc_s.so.1" "$B/lib/unused/" 2>/dev/null
fi
export PATH="$B/bin:${PATH:-/usr/bin:/bin}"
PY=$(command -v python3 || echo /usr/bin/python3)

# ---- the CUDA libraries of PyTorch's wheels ------------------------------------------------------
cuda_dirs=$("$PY" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + [p for p in sys.path if p.endswith("-packages")])
want = ("libcublasLt.so", "libcublas.so", "libcudnn.so", "libnvrtc.so", "libnccl.so", "libcudart.so", "libnvJitLink.so")
dirs = []
for r in sorted(roots):
    for lib in glob.glob(os.path.join(r, "nvidia", "**", "lib*.so*"), recursive=True):
        d = os.path.dirname(lib)
        if os.path.basename(lib).startswith(want) and d not in dirs:
            dirs.append(d)
print(":".join(dirs))
EOF
)
if [[ -n $cuda_dirs ]]; then
  export LD_LIBRARY_PATH="$cuda_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "CUDA libraries from site-packages: ${cuda_dirs//:/ }"
else
  say "no nvidia-* wheels in site-packages (the CUDA libraries must be on the loader's path)"
fi
for lib in libcublasLt.so.13 libcudnn.so.9 libnvrtc.so.13 libnccl.so.2; do
  found=""
  IFS=: read -ra ds <<<"${LD_LIBRARY_PATH:-}"
  for d in "${ds[@]}"; do [[ -e $d/$lib ]] && { found=$d; break; }; done
  say "  $lib: ${found:-not found in LD_LIBRARY_PATH}"
done
unresolved=$(ldd "$B/bin/chainrule" 2>/dev/null | grep 'not found' | awk '{print $1}' | tr '\n' ' ')
[[ -z $unresolved ]] || say "chainrule's unresolved libraries: $unresolved"

# ---- 2. the GPU --------------------------------------------------------------------------------
GPU=0
if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  GPU=1
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
else
  say "no GPU (nvidia-smi finds none): every step should skip"
fi

# ---- 3. the steps --------------------------------------------------------------------------------
# run_step NAME BUDGET_S CMD...: runs CMD under a timeout (its budget, cut to what is left of the
# deadline), logs to $LOGS/NAME.log, records PASS / SKIP / FAIL / TIMEOUT and its time.
declare -A STATUS SECS
ORDER=()
run_step() {
  local name=$1 budget=$2
  shift 2
  # DEVICE_CHECK_STEPS="masked nccl": run only these steps (a rerun of some, within the budget).
  if [[ -n ${DEVICE_CHECK_STEPS:-} && " $DEVICE_CHECK_STEPS " != *" $name "* ]]; then
    return
  fi
  local left=$((DEADLINE - $(date +%s) - 5))
  ORDER+=("$name")
  if ((left < 10)); then
    STATUS[$name]="TIMEOUT (no time left)" SECS[$name]=0
    say "$name: no time left in the budget"
    return
  fi
  ((budget > left)) && budget=$left
  say "$name: running (budget ${budget} s): $*"
  local t0 rc=0
  t0=$(date +%s)
  timeout -k 10 "$budget" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  SECS[$name]=$(($(date +%s) - t0))
  case $rc in
    0) STATUS[$name]=PASS ;;
    77) STATUS[$name]=SKIP ;;
    124|137) STATUS[$name]="TIMEOUT (${budget} s)" ;;
    *) STATUS[$name]="FAIL (exit $rc)" ;;
  esac
  say "$name: ${STATUS[$name]} in ${SECS[$name]} s"
  [[ $rc == 0 || $rc == 77 ]] || tail -n 25 "$LOGS/$name.log"
}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
run_step ops 60 "$B/bin/test_gpu_ops"
run_step smoke 90 bash "$B/tests/gpu/smoke.sh" "$B/bin/chainrule" "$B"
run_step parity 80 bash "$B/tests/gpu/parity.sh" "$B/bin/chainrule" "$B" 1e-5 2e-4 2,1 1,2 2,2
run_step masked 60 bash "$B/tests/gpu/masked.sh" "$B/bin/chainrule" "$B" 1e-5 5e-4
# About 10 s each (two watchdog timeouts of 2-3 s, NCCL init); the torch step, last, absorbs any
# squeeze on the deadline.
run_step nccl 25 "$B/bin/test_nccl"
run_step nccl_np2 35 env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  OMPI_MCA_rmaps_base_oversubscribe=1 "$B/bin/mpirun" -np 2 --bind-to none -x LD_LIBRARY_PATH \
  "$B/bin/test_nccl"
run_step ours 70 "$PY" "$B/bench/gpu/bench_ours.py" --chainrule "$B/bin/chainrule" --steps 6 --warmup 3 \
  --workdir "$WORK/bench"
run_step torch 160 "$PY" "$B/bench/gpu/torch_baseline.py" --steps 6 --warmup 3

# ---- 4. the table --------------------------------------------------------------------------------
status_lines=""
for s in "${ORDER[@]}"; do status_lines+="$s ${SECS[$s]} ${STATUS[$s]}"$'\n'; done
"$PY" - "$LOGS" "$GPU" "$(($(date +%s) - START))" "$status_lines" <<'EOF'
import os, re, sys
logs, gpu, total, status_lines = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
def lines(step, tag):
    p = os.path.join(logs, step + ".log")
    if not os.path.exists(p):
        return []
    return [dict(re.findall(r"(\w+)=(\S+)", l)) for l in open(p, errors="replace") if l.startswith(tag + " ")]
title = "chainrule device check" + ("" if gpu else " -- no GPU: every step skipped, nothing measured")
print("\n" + "=" * 100 + "\n" + title + "\n" + "=" * 100)
print("steps:")
for l in status_lines.strip().splitlines():
    name, secs, st = l.split(" ", 2)
    print(f"  {name:<8} {st:<24} {secs:>4} s")
ops = lines("ops", "OPERR")
if ops:
    print("\nkernel parity, GPU vs CPU (max_rel = max|gpu-cpu| / max|cpu| per output):")
    print(f"  {'op':<52} {'dtype':<5} {'max_abs':>10} {'max_rel':>10} {'tol':>7}  ok")
    for o in ops:
        ok = o.get("nonfinite") == "0" and float(o["max_rel"]) <= float(o["tol"])
        print(f"  {o['op']:<52} {o['dtype']:<5} {o['max_abs']:>10} {o['max_rel']:>10} {o['tol']:>7}  {'yes' if ok else 'NO (' + o.get('worst', '') + ')'}")
gaps = lines("smoke", "GAP") + lines("parity", "GAP")
if gaps:
    print("\ntraining, GPU vs CPU (smoke) and N ranks vs 1 rank on the GPU (parity): max gap over 20 steps")
    print(f"  {'run':<34} {'loss gap':>9} {'tol':>6} {'weight gap':>11} {'tol':>6}  result")
    for g in gaps:
        print(f"  {g['label']:<34} {g['loss_gap']:>9} {g['loss_tol']:>6} {g['weight_gap']:>11} {g['weight_tol']:>6}  {g['result']}")
nccl = lines("nccl", "NCCLCHECK") + lines("nccl_np2", "NCCLCHECK")
if nccl:
    print("\nNCCL communicator (test_nccl; np2 = under mpirun -np 2):")
    for n in nccl:
        print(f"  {n.get('check', '?'):<32} rank {n.get('rank', '?'):<3} {n.get('result', '?'):<5} {n.get('detail', '')[:60]}")
bench = {(b.get("impl"), b.get("model")): b for b in lines("ours", "BENCH") + lines("torch", "BENCH")}
if bench:
    dev = next((b.get("device") for b in bench.values() if b.get("device")), "?")
    print(f"\nthroughput, bf16, T=1024, batch 16 ({dev}; MFU = tokens/s x (6 N_matmul + 12 L T C) / dense bf16 peak):")
    print(f"  {'model':<7} {'ours tok/s':>11} {'MFU%':>6} {'torch.compile tok/s':>20} {'MFU%':>6} {'ours/torch':>11}")
    for model in ("gpt2", "llama"):
        o, t = bench.get(("ours", model), {}), bench.get(("torch.compile", model), {})
        ratio = (f"{float(o['tokens_per_s']) / float(t['tokens_per_s']):.2f}"
                 if o.get("tokens_per_s") and t.get("tokens_per_s") and float(t["tokens_per_s"]) > 0 else "n/a")
        print(f"  {model:<7} {o.get('tokens_per_s', o.get('error', 'n/a')):>11} {o.get('mfu_pct', 'n/a'):>6} "
              f"{t.get('tokens_per_s', t.get('error', 'n/a')):>20} {t.get('mfu_pct', 'n/a'):>6} {ratio:>11}")
print(f"\ntotal {total} s" + ("" if gpu else "; no GPU: the table has no measurements"))
EOF

fail=0
for s in "${ORDER[@]}"; do
  case ${STATUS[$s]} in
    PASS) ;;
    SKIP) ((GPU)) && fail=1 ;;  # with a GPU present, a skip means the binaries do not see it
    *) fail=1 ;;
  esac
done
say "logs in $LOGS"
if ((fail)); then say "FAIL"; exit 1; fi
say "$( ((GPU)) && echo PASS || echo 'PASS (no GPU: every step skipped)')"
exit 0
