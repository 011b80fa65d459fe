#!/usr/bin/env bash
# Regenerate the bundled sample clips in phaseo_notebook/data/samples/.
#
# The project ships only speech it makes itself: each clip is one everyday sentence
# spoken by espeak-ng, then converted by sox to what the local engine expects (16 kHz,
# mono, 16-bit PCM WAV). samples.tsv lists each file with the sentence spoken.
#
# Voices are espeak-ng's Klatt variants: PocketSphinx's en-us model recognises them far
# better than the default espeak voices. The sentences and voices were chosen by running
# PocketSphinx on many candidates and keeping those it gets right (one keeps a single
# error on purpose, so the quality tools have something to measure).
#
# Deterministic: the same espeak-ng and sox versions give byte-identical files (sox runs
# without dither, the only random step). Other versions may give slightly different audio.
#
# Usage: scripts/make_samples.sh        (from anywhere; needs espeak-ng and sox)
set -euo pipefail

for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || {
        echo "make_samples.sh: $tool is required (Debian: apt-get install espeak-ng sox)" >&2
        exit 1
    }
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/phaseo_notebook/data/samples"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Words per minute for every clip: at espeak's default (175) PocketSphinx did best.
speed=175

# file <TAB> espeak-ng voice <TAB> sentence
clips="\
numbers.wav	en-us+klatt	one two three four five
phone_number.wav	en-us+klatt2	my phone number is five five five one two three four
weather.wav	en-us+klatt4	the weather is nice today
call_back.wav	en-us+klatt6	please call me back tomorrow morning
thanks.wav	en-us+klatt2	thank you very much
cost.wav	en+klatt	how much does it cost
report.wav	en-us+klatt4	please send the report by friday"

mkdir -p "$out"
rm -f "$out"/*.wav "$out/samples.tsv"
printf 'file\treference\n' >"$out/samples.tsv"

while IFS=$'\t' read -r file voice sentence; do
    espeak-ng -v "$voice" -s "$speed" -w "$work/raw.wav" "$sentence"
    # -D: no dither, so the output is reproducible; gain -3 dB: resampling overshoots
    # espeak's full-scale peaks and would clip; pad: PocketSphinx tends to drop a first
    # word that starts at sample 0.
    sox -D "$work/raw.wav" -r 16000 -c 1 -b 16 -e signed-integer "$out/$file" \
        gain -3 pad 0.3 0.3
    printf '%s\t%s\n' "$file" "$sentence" >>"$out/samples.tsv"
done <<<"$clips"

echo "wrote $(($(wc -l <"$out/samples.tsv") - 1)) clips to $out:"
(cd "$out" && ls -l -- *.wav samples.tsv)
