#!/usr/bin/env bash
# The version matrix (README, "Quick start"; .ci/run runs it after the suite): does vsr install and run wherever its
# metadata says it does?
#
# 1. Builds the sdist, then the wheel from that sdist (python -m build), as pip does for users.
# 2. For every CPython 3.10-3.13 it finds (python3.X on PATH, then pyenv's versions, then /usr/bin, /usr/local/bin), a
#    venv with the newest release of every dependency (torch included: pip's constraint file, if the machine has one,
#    is set aside with PIP_CONSTRAINT=/dev/null); and on 3.11 one more with the oldest releases pyproject.toml allows
#    (each `>=` floor pinned with `==`). The venvs live in $VSR_MATRIX_CACHE (default ~/.cache/vsr-matrix), outside
#    the clone, and are upgraded in place on the next run: the first run downloads torch for each (PyPI's CUDA build,
#    several GB; later runs reuse them).
# 3. In each venv: installs the wheel (not editable), then from a folder outside the repository makes a clip with
#    audio and an image, runs `vsr upscale` on both, and checks the video with bench/check_video.py (frames,
#    timestamps, size, audio packets, colour tags); then runs the smoke subset of the suite (SMOKE below: video,
#    image, segments and parts, webcam headless, eval and the protocol, bench --quick, data, signals) against the
#    installed package.
#
# Usage: bash tests/matrix.sh [3.12 3.13 3.11:oldest ...]   (default: every version found, and 3.11's oldest; a
# version asked for and not found is a failure, one not asked for and not found is reported and skipped; VERSION:newest
# or VERSION:oldest runs one of the two). Exit 0 only if every environment passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${VSR_MATRIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vsr-matrix}
export VSR_TEST_DATA="${VSR_TEST_DATA:-$(cd .. && pwd)/shared/data}"
if [ $# -gt 0 ]; then versions=("$@"); else versions=(3.10 3.11 3.12 3.13); fi
oldest_on=3.11

SMOKE=(
  tests/test_video.py::test_timestamps_audio_size_and_count_kept tests/test_video.py::test_ten_bit_stays_ten_bit tests/test_video.py::test_full_range_and_colour_tags_kept tests/test_video.py::test_real_mp4_with_aac tests/test_video.py::test_title_and_chapters_kept tests/test_video.py::test_rotation_kept tests/test_video.py::test_semiplanar_and_16_bit_frames_keep_their_chroma_layout tests/test_video.py::test_truncated_input_gives_the_decodable_part tests/test_video.py::test_stdin_to_stdout tests/test_video.py::test_bad_inputs
  tests/test_cli_video.py::test_file_to_file_with_summary tests/test_cli_video.py::test_bad_video_inputs_one_line_and_nothing_lost tests/test_cli_video.py::test_stop_signal_exits_and_leaves_nothing
  'tests/test_stdin_stop.py::test_signal_stops_a_pipe_in_any_state[header]' 'tests/test_stdin_stop.py::test_signal_stops_a_pipe_in_any_state[stalled]'
  tests/test_cli.py::test_images_grey_rgb_rgba_and_folder tests/test_cli.py::test_usage_errors_are_one_line tests/test_cli.py::test_help_has_plain_flags_and_argument_names tests/test_cli.py::test_eval_json tests/test_cli.py::test_bare_vsr_and_version tests/test_cli.py::test_help_fits_80_columns
  'tests/test_formats.py::test_family_kept_or_said[vp9_alpha.webm]' 'tests/test_formats.py::test_family_kept_or_said[h265_gbrp.mp4]'
  'tests/test_formats.py::test_family_kept_or_said[rgba_qtrle.mov]' 'tests/test_formats.py::test_family_kept_or_said[hlg_bt2020.webm]'
  'tests/test_formats.py::test_family_kept_or_said[gray_png.mov]' 'tests/test_formats.py::test_family_kept_or_said[h265_12bit.mkv]'
  tests/test_start_stop.py
  tests/test_segments.py
  tests/test_parts.py
  tests/test_scaleout.py::test_two_workers_give_the_single_process_output
  tests/test_webcam.py::test_headless_file_records_every_frame_side_by_side tests/test_webcam.py::test_errors_are_one_line
  tests/test_protocol.py
  tests/test_model.py
  tests/test_engine.py::test_a_tile_per_thread_gives_the_same_bytes tests/test_engine.py::test_cpu_results_do_not_depend_on_the_thread_count tests/test_engine.py::test_compile_keeps_compiling_past_dynamos_default_recompile_limit
  tests/test_precision.py::test_auto_costs_at_most_0_01_db_on_set5
  tests/test_bench.py::test_cli_json_and_plot tests/test_bench.py::test_tables_never_cut_a_number tests/test_bench.py::test_cli_tables_piped_fit_80_columns
  tests/test_download.py
  tests/test_api.py
  tests/test_layout.py
)

find_python() { # $1 = 3.X: the first interpreter of that version that runs and has venv
  local v=$1 c
  local candidates=("$(command -v "python$v" 2>/dev/null || true)")
  local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  if [ -d "$pyenv_root/versions" ]; then
    while IFS= read -r c; do candidates+=("$c"); done < <(ls -d "$pyenv_root"/versions/"$v".*/bin/"python$v" 2>/dev/null | sort -V -r)
  fi
  candidates+=("/usr/local/bin/python$v" "/usr/bin/python$v")
  for c in "${candidates[@]}"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != tuple(map(int, sys.argv[1].split("."))))' "$v" >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

say() { printf 'matrix: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/vsr-matrix.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- 1. the distribution -------------------------------------------------------------------------------------------
builder=""
for v in "${versions[@]%%:*}" 3.13 3.12 3.11 3.10; do builder=$(find_python "$v") && break; done
[ -n "$builder" ] || { say "no Python 3.10-3.13 found"; exit 1; }
"$builder" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip install -q build
"$work/build-env/bin/python" -m build -q --outdir "$work/dist" "$root" >/dev/null
wheel=$(ls "$work"/dist/*.whl)
say "built $(basename "$wheel") and $(basename "$(ls "$work"/dist/*.tar.gz)") (the wheel from the sdist)"

# --- 2-3. one environment ------------------------------------------------------------------------------------------
check_env() { # $1 = label, $2 = python, $3 = newest|oldest
  local label=$1 python=$2 mode=$3 venv="$cache/py$1-$3" py pip_args
  say "== Python $label, $mode dependencies ($python)"
  if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
  py="$venv/bin/python"
  export PIP_CONSTRAINT=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
  "$py" -m pip install -q --upgrade pip
  if [ "$mode" = newest ]; then
    pip_args=(--upgrade --upgrade-strategy eager)
  else # the oldest release this Python can install of each dependency's `>=` floor (those whose marker holds here)
    "$py" - "$root/pyproject.toml" >"$work/oldest.txt" <<'EOF'
import re, subprocess, sys, tomllib
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.version import Version
for dep in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    req = Requirement(dep)
    if req.marker is not None and not req.marker.evaluate():
        continue
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    if len(floors) != 1:
        sys.exit(f"matrix: {dep!r} has no single >= floor")
    listing = subprocess.run([sys.executable, "-m", "pip", "index", "versions", req.name], capture_output=True, text=True).stdout
    found = re.search(r"Available versions: (.*)", listing)
    versions = [Version(v.strip()) for v in found[1].split(",")] if found else []
    fit = [v for v in versions if v >= floors[0] and v in req.specifier and not v.is_prerelease and not v.local]
    if not fit:
        sys.exit(f"matrix: no release of {dep!r} for this Python")
    print(f"{req.name}=={min(fit)}")
EOF
    say "oldest allowed: $(tr '\n' ' ' <"$work/oldest.txt")"
    pip_args=(-c "$work/oldest.txt")
  fi
  "$py" -m pip install -q "${pip_args[@]}" "$wheel" pytest
  "$py" -m pip install -q --force-reinstall --no-deps "$wheel" # the wheel just built, even where this version was there
  unset PIP_CONSTRAINT
  "$py" -m pip check
  "$py" - <<'EOF' >&2
from importlib.metadata import version
print("matrix:", ", ".join(f"{p} {version(p)}" for p in ("torch", "av", "numpy", "opencv-python", "typer", "rich", "safetensors")))
EOF

  local out="$work/run-$label-$mode"
  mkdir -p "$out"
  (
    cd "$out"
    "$py" -c 'import sys, vsr; sys.exit(0 if sys.prefix in vsr.__file__ else f"vsr imported from {vsr.__file__}, not the venv")'
    "$py" -m vsr.synth clip.mp4 --size 96x64 --frames 15
    "$venv/bin/vsr" upscale clip.mp4 clip_x2.mp4 --scale 2 --arch 9-1-5
    "$py" "$root/bench/check_video.py" clip.mp4 clip_x2.mp4 --scale 2
    "$py" -c 'import numpy as np; from vsr.media.imageio import write_image; write_image("photo.png", (np.indices((40, 56)).sum(0) * 3 % 256).astype(np.uint8))'
    "$venv/bin/vsr" upscale photo.png photo_x3.png --scale 3
    "$py" -c 'from vsr.media.imageio import read_image; s = read_image("photo_x3.png").shape; assert s == (120, 168), s; print("ok   image: 56x40 -> 168x120")'
  )
  # the suite against the installed package: pytest's script (python -m would put the clone first on sys.path) and
  # --import-mode=append (the clone's root goes last)
  "$venv/bin/pytest" -q -p no:cacheprovider --import-mode=append "${SMOKE[@]}"
}

failed=()
ran=0
for arg in "${versions[@]}"; do
  v=${arg%%:*}
  if ! python=$(find_python "$v"); then
    if [ $# -gt 0 ]; then failed+=("$v (not found)"); fi
    say "Python $v: not found, skipped"
    continue
  fi
  modes=(newest)
  [ "$v" = "$oldest_on" ] && modes+=(oldest)
  [ "$arg" != "$v" ] && modes=("${arg#*:}")
  for mode in "${modes[@]}"; do
    ran=$((ran + 1))
    set +e # a failing environment must not stop the others; inside, the first failing step ends that environment
    (
      set -e
      check_env "$v" "$python" "$mode"
    )
    rc=$?
    set -e
    [ $rc = 0 ] || failed+=("$v $mode")
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "passed: $ran environments"
