#!/usr/bin/env bash
# The testbed's evaluation (docs/testbed.md): every measurement behind its verdict, in the order
# they matter. Needs `npm run build`, models/testbed (python scripts/build_testbed.py --out
# models/testbed) and the dev-time Python. Nothing else may run meanwhile: the sweeps record
# ms/question and decode tokens/s.
#
#   scripts/testbed_eval.sh [STAGE...]     stages: scenes sweep2 sweep8 neurons maps criteria stats (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${COREMATCHING_TESTBED:-models/testbed}
data=/tmp/testbed-scenes
cli="node dist/src/cli/main.js"
types=color,shape,count,exists,side,list,describe
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(scenes sweep2 sweep8 neurons maps criteria stats)

for stage in "${stages[@]}"; do
  case $stage in
    scenes) # 301 test images, one question each, 43 of each of the seven types; the multi-word types alone for the neuron sweep
      python scripts/scenes.py --out $data --split test --count 301 --types $types
      python scripts/scenes.py --out $data-multi --split test --count 60 --types list,describe ;;
    sweep2) # every policy at token layer 2 (25% of 256 is 64: that column would repeat the 64 one)
      $cli eval --model $model --data $data/test --sweep --token-layer 2 --budgets knee,16,32,64 \
        --policies dense,corematching,corematching-tokens,fastv,projection,random,pool --out docs/testbed-sweep-layer2 ;;
    sweep8) # token layer 8: the first 8 of 30 layers see every token (pool acts before layer 0 and is in sweep2)
      $cli eval --model $model --data $data/test --sweep --token-layer 8 --budgets knee,16,32,64 \
        --policies corematching,corematching-tokens,fastv,random --out docs/testbed-sweep-layer8
      $cli eval --model $model --data $data/test --sweep --token-layer 8 --budgets knee,16,32,64 \
        --policies projection --out docs/testbed-sweep-layer8-projection ;;
    weighted) # this project's --match weighted, beside the paper's count (reported where the count loses)
      $cli eval --model $model --data $data/test --sweep --token-layer 2 --budgets knee,16,64 --match weighted \
        --policies corematching-tokens --out docs/testbed-sweep-weighted ;;
    neurons) # decode-time core neurons on the multi-word questions, beta 0.2 .. 1.0
      $cli sweep-neurons --model $model --data $data-multi/test --betas 0.2,0.4,0.6,0.8,1.0 \
        --out docs/testbed-neurons --report docs/testbed-neurons.html ;;
    maps) # one scene, three questions, 16 of 256 tokens kept at layer 2
      image=$data/test/images/000000.png
      for pair in "color:What color is the triangle?" "count:How many circles are there?" "describe:Describe the scene in one sentence."; do
        name=${pair%%:*}; question=${pair#*:}
        for policy in corematching fastv; do
          $cli visualize --model $model --image $image --prompt "$question" --policy $policy --budget 16 --out docs/testbed-map-$name-$policy.png
        done
      done
      cp $image docs/images/testbed-scene-000000.png ;;
    criteria) # share of the named object's patches each criterion keeps
      $cli analyze criteria --model $model --data $data/test --limit 100 --budgets 16,64 \
        --out docs/testbed-criteria --report docs/testbed-criteria.html ;;
    stats) # what the fine-tuning did to the FFNs
      python scripts/testbed_ffn_stats.py --json docs/testbed-ffn-stats.json | tee docs/testbed-ffn-stats.md ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
