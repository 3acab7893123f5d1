#!/usr/bin/env bash
# ansible-test sanity (tools/ansible-test.sh has the details). Extra arguments go to ansible-test.
exec "$(dirname "$0")/ansible-test.sh" sanity --venv --python 3.11 "$@"
