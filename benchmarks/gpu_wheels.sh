#!/usr/bin/env bash
# Download the server's packages as wheels into .whl/ (ignored by git), for the GPU machine.
#
# The GPU machine has no network and no fastapi/uvicorn/pydantic, which `score.py --serve`
# needs (the "server" section of python -m benchmarks.gpu). It does have anyio, h11, click,
# httpx and prometheus-client. Run this here, then carry .whl/ to the machine and install
# from it there, offline (the command is in benchmarks/gpu.py's docstring):
#
#   bash benchmarks/gpu_wheels.sh
#
# The versions are the ones the test suite passes with; the machine runs CPython 3.12 on
# manylinux x86_64. typing-extensions is included because pydantic needs >= 4.16, newer than
# the machine may have.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    fastapi==0.165.0
    starlette==1.10.0
    uvicorn==0.55.0
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    annotated-doc==0.0.7        # fastapi imports it
    typing-inspection==0.4.5
    opentelemetry-api==1.45.2   # fastapi imports it (fastapi.telemetry)
    typing-extensions==4.16.0
)

rm -rf .whl
mkdir -p .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}"
echo "$(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/:" >&2
ls .whl >&2
