#!/usr/bin/env bash
# Kaldi/wenet-style option parsing for staged recipes.
#
# Define variables with defaults, then source this file:
#     stage=0
#     stop_stage=3
#     . tools/parse_options.sh
# and `run.sh --stage 1 --stop_stage 2` (or `--stage=1`) sets them. Dashes in option names map to
# underscores. Options that name no variable defined before sourcing are an error, as is an option
# without a value. Arguments after the options stay in "$@".

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "usage: $0 [--name value ...]; options (with current values):" >&2
      for v in ${parse_options_vars:-stage stop_stage}; do echo "  --$v ${!v}" >&2; done
      exit 0 ;;
    --*=*) opt="${1%%=*}"; value="${1#*=}"; shift ;;
    --*)
      opt="$1"
      if [ $# -lt 2 ]; then echo "$0: option $opt needs a value" >&2; exit 1; fi
      value="$2"; shift 2 ;;
    *) break ;;
  esac
  name="${opt#--}"
  name="${name//-/_}"
  if ! [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!name+set}" ]; then
    echo "$0: unknown option $opt" >&2
    exit 1
  fi
  printf -v "$name" '%s' "$value"
done
unset opt value name
