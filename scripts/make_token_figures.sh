#!/usr/bin/env bash
# The figures of docs/token-maps.md: one scene, questions about different objects, the tokens that
# CoreMatching and FastV keep for each (needs `npm run build` and models/default).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/images
image=test/fixtures/scenes/images/test-000003.png
for object in red green yellow; do
  q="What shape is the $object object?"
  node dist/src/cli/main.js visualize --image "$image" --prompt "$q" --policy corematching --out "docs/images/corematching-knee-$object.png"
  node dist/src/cli/main.js visualize --image "$image" --prompt "$q" --policy corematching --budget 16 --out "docs/images/corematching-16-$object.png"
  node dist/src/cli/main.js visualize --image "$image" --prompt "$q" --policy fastv --budget 16 --out "docs/images/fastv-16-$object.png"
done
