#!/usr/bin/env bash
# AArch64 NEON quantized kernels (src/calpaca/tensor/quant_dot_neon.cpp), cross-built and run
# under user-mode qemu: tests/neon/neon_selftest.cpp with the tensor sources it needs is
# compiled twice with aarch64-linux-gnu-g++ — -march=armv8-a (vmull_s8 / vpadalq_s16 path,
# run on an emulated Cortex-A53, which has no dot-product instructions) and
# -march=armv8.2-a+dotprod (vdotq_s32 path, run with -cpu max) — and must report every type
# ok. The dot-product build must contain sdot instructions and the baseline none. With
# --fault (one weight code changed for the fast kernels) each build must fail on every type,
# so the comparison cannot pass vacuously.
# Needs g++-aarch64-linux-gnu and qemu-user-static (scripts/install-deps.sh installs them).
# Usage: neon.sh CALPACA SOURCE_DIR SCRATCH_DIR   (CALPACA is unused: nothing here runs the CLI)
# NEON_E2E_JOBS=N compiles N files at a time (default: all CPUs).
set -uo pipefail
SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
finish() {
    echo "e2e neon: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
}

CXX=aarch64-linux-gnu-g++ OBJDUMP=aarch64-linux-gnu-objdump QEMU=qemu-aarch64-static SYSROOT=/usr/aarch64-linux-gnu
for tool in "$CXX" "$OBJDUMP" "$QEMU"; do
    command -v "$tool" >/dev/null || bad "$tool not found (scripts/install-deps.sh installs g++-aarch64-linux-gnu and qemu-user-static)"
done
[ -d /usr/include/fmt ] || bad "/usr/include/fmt not found (libfmt-dev)"
[ "$fail" -eq 0 ] || finish

# fmt header-only from a private include dir: the host's /usr/include stays off the cross path
mkdir -p "$W/include" && cp -r /usr/include/fmt "$W/include/"
SOURCES=(tensor/dtype.cpp tensor/quant.cpp tensor/quant_legacy.cpp tensor/quant_kquants.cpp
         tensor/quant_dot_ref.cpp tensor/quant_dot_neon.cpp)
JOBS=${NEON_E2E_JOBS:-$(nproc)}

# build MARCH NAME: objects and the selftest binary in $W/NAME
build() {
    local march=$1 name=$2 d=$W/$2 f o
    mkdir -p "$d"
    for f in "${SOURCES[@]/#/$SRC/src/calpaca/}" "$SRC/tests/neon/neon_selftest.cpp"; do
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
        o=$d/$(basename "$f" .cpp).o
        { "$CXX" -std=c++20 -O2 -march="$march" -Wall -Wextra -Werror -DFMT_HEADER_ONLY -I"$W/include" -I"$SRC/src" \
              -c "$f" -o "$o" 2>"$o.log" && touch "$o.ok"; } &
    done
    wait
    for f in "${SOURCES[@]}" neon_selftest.cpp; do
        o=$d/$(basename "$f" .cpp).o
        if [ ! -e "$o.ok" ]; then bad "$name: compiling $f failed: $(head -c 2000 "$o.log")"; return 1; fi
    done
    if ! "$CXX" -o "$d/neon_selftest" "$d"/*.o 2>"$d/link.log"; then bad "$name: link failed: $(head -c 2000 "$d/link.log")"; return 1; fi
    ok
}

# run NAME CPU ISA: clean run passes every type; --fault run fails every type
run() {
    local name=$1 cpu=$2 isa=$3 bin=$W/$1/neon_selftest
    timeout 300 "$QEMU" -L "$SYSROOT" -cpu "$cpu" "$bin" --expect-isa "$isa" >"$W/$name.out" 2>&1
    local rc=$?
    sed "s/^/  [$name] /" "$W/$name.out"
    [ $rc -eq 0 ] && ok || bad "$name: selftest exit $rc"
    local oks
    oks=$(grep -c '^Q[0-9]_[0-9K] *ok:' "$W/$name.out")
    [ "$oks" -eq 10 ] && ok || bad "$name: $oks of 10 weight types ok"
    [ "$(grep -c '^act .* ok:' "$W/$name.out")" -eq 3 ] && ok || bad "$name: activation quantizers not all ok"
    grep -q "^kernels: $isa\$" "$W/$name.out" && ok || bad "$name: kernels are not $isa"

    timeout 300 "$QEMU" -L "$SYSROOT" -cpu "$cpu" "$bin" --expect-isa "$isa" --fault >"$W/$name.fault" 2>&1
    rc=$?
    local fails
    fails=$(grep -c '^Q[0-9]_[0-9K] *FAIL:' "$W/$name.fault")
    [ $rc -eq 1 ] && ok || bad "$name --fault: exit $rc (want 1)"
    [ "$fails" -eq 10 ] && ok || bad "$name --fault: $fails of 10 weight types detected the changed code: $(cat "$W/$name.fault")"
    echo "  [$name --fault] $fails of 10 weight types FAIL as they must; exit $rc"
}

if build armv8-a neon; then
    n=$($OBJDUMP -d "$W/neon/quant_dot_neon.o" | grep -c $'\tsdot')
    [ "$n" -eq 0 ] && ok || bad "armv8-a build contains $n sdot instructions"
    run neon cortex-a53 neon
fi
if build armv8.2-a+dotprod neon-dotprod; then
    n=$($OBJDUMP -d "$W/neon-dotprod/quant_dot_neon.o" | grep -c $'\tsdot')
    [ "$n" -gt 0 ] && ok || bad "armv8.2-a+dotprod build contains no sdot instructions"
    echo "  [neon-dotprod] quant_dot_neon.o: $n sdot instructions"
    run neon-dotprod max neon-dotprod
fi
finish
