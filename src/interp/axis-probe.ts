// Vision-token enhancement ("The Dual Mechanisms of Spatial Reasoning in Vision-Language Models", Cui et al.,
// arXiv 2603.22278), as the authors' code does it (github Nix07/spatial-variable-binding, coco_amplification/):
//
// 1. Axis probes (run_experiment.py -> src/common.py `train_axis_probes`, src/qwen.py `build_probe_data`): each image
//    is run once with a neutral prompt ("Describe the image.") and the projector output (the image-token embeddings,
//    one row per image token) is read. Per question, the rows of the image tokens inside the subject's box and inside
//    the object's box are mean-pooled: two examples per item. Labels: the subject gets the class of the relation
//    (horizontal: left 0 / right 1; vertical: above 0 / below 1), the object the opposite class. Per axis a two-class
//    linear probe W [D, 2], b [2] is trained with cross-entropy by full-batch AdamW (lr 1e-3, weight decay 1e-4,
//    200 epochs = 200 steps, torch defaults betas (0.9, 0.999), eps 1e-8, decay on W and b), initialised
//    W, b ~ N(0, 1) / sqrt(D), on a 95 / 5 split by item. Only "golden" items (both listings already answered right)
//    train it, and only when the boxes' token centres agree with the relation (their `side_check`).
// 2. Enhancement (src/qwen.py `predict_with_amp`): a pre-hook on text layer 0, prefill only, over every image token:
//    h <- h + alpha * (h W) diag(|W_k|^2 + 1e-8)^-1 W^T, the `vision_token_add` intervention of src/spec/spec.ts
//    with the probe's two columns as directions. The prediction is the argmax next token, decoded, trimmed, lowercased.
// 3. Sweep (src/common.py `run_coco_baseline_eval`, `partition_results`, `run_coco_amp_sweep`, `compute_oracle`,
//    `make_random_W`): every item is asked in both option orders ("left or right" / "right or left"); an item is
//    correct only when both listings are ("strict both listings"). A failed item is fixed at alpha only when every
//    listing it failed becomes correct. Alphas 0..15; "Probe" is the best single alpha, "Probe*" the per-item oracle
//    (fixed at any alpha > 0). The control uses random directions: a Gaussian D x 2 matrix with unit-norm columns,
//    drawn afresh per axis (the authors draw one unseeded set; here one set per seed, several seeds).
//
// Where this differs from the authors' code, on purpose:
//   - A token is inside a box when its grid cell's centre is (their code takes every patch the box touches).
//   - Boxes are scaled to the model's view of the image per axis (exact for resizing processors such as Qwen's and
//     for square images; a LLaVA processor that centre-crops a non-square image would need the crop offset).
//   - Their side check passes an item whose subject and object token centres coincide when the relation is
//     right / below; here ties are skipped on both sides.
//   - Their sweep only replays the failed listings of failed items and counts golden items as still correct
//     (scope "failures", the default); scope "all" re-asks every item in both orders at every alpha and also counts
//     items the enhancement breaks.
//   - They drop items with an out-of-axis baseline answer (`clean_results`); here those count as failures unless
//     `dropInvalid` (the CLI's --drop-invalid) is set.
//
// The probe is float64 on the CPU (it is small: D x 2 weights over a few hundred pooled rows). Browser-safe: Node file
// access only through dynamic imports inside the readers.

export * from './axis-probe/items.js';
export * from './axis-probe/pooling.js';
export * from './axis-probe/probe.js';
export * from './axis-probe/probe-file.js';
export * from './axis-probe/sweep.js';
