#!/usr/bin/env python3
"""Train the vlmscope model organism: a small LLaVA-layout VLM (CLIP ViT + MLP projector + Llama decoder) on the
synthetic spatial scenes that `scripts/make-organism.ts` exported, and write its weights into the Hugging Face
folder that script prepared (config.json, tokenizer files).

A development tool (fixture generator), not part of the product: it needs PyTorch and transformers, e.g.
    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors pillow numpy
    .venv/bin/python scripts/train_organism.py --work .tmp/organism --out weights/organism

The training examples are pre-tokenised by the TypeScript side (the engine's own tokenizer and LlavaProcessor),
so what the model is trained on is exactly what vlmscope feeds it. Loss is on the answer tokens and </s> only.
Deterministic for a given --seed on one machine (CPU, fixed thread count).
"""

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import LlavaConfig, LlavaForConditionalGeneration


def load_examples(work: str):
    images: dict[str, int] = {}
    pixels: list[np.ndarray] = []
    patch_labels: list[tuple[list[int], list[int]]] = []
    examples = []
    with open(os.path.join(work, 'train.jsonl')) as f:
        for line in f:
            ex = json.loads(line)
            if ex['image'] not in images:
                images[ex['image']] = len(pixels)
                img = Image.open(os.path.join(work, ex['image'])).convert('RGB')
                pixels.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())
            single = (ex['single_prefix'], [(t['ids'], t['answer_start']) for t in ex['single']]) if 'single' in ex else None
            examples.append((images[ex['image']], ex['ids'], ex['spans'], ex['types'], single))
            if 'patch_colour' in ex and len(patch_labels) < len(pixels):
                patch_labels.append((ex['patch_colour'], ex['patch_shape']))
    labels = None
    if len(patch_labels) == len(pixels):
        labels = (torch.tensor([c for c, _ in patch_labels]), torch.tensor([s for _, s in patch_labels]))
    return torch.from_numpy(np.stack(pixels)), examples, labels


def normalise(u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    # CLIPImageProcessor on an image already at the input size: rescale by 1/255, then (x - mean) / std.
    return (u8.float() * (1.0 / 255.0) - mean[:, None, None]) / std[:, None, None]


def remap_vocab(state: dict, init_tokenizer: str, out_tokenizer: str) -> dict:
    # Continuing from weights whose tokenizer numbers the same tokens differently (the BPE merge order depends on
    # corpus counts): permute the rows of the embedding and lm_head by token string.
    old = json.load(open(init_tokenizer))
    new = json.load(open(out_tokenizer))
    ids_old = {t['content']: t['id'] for t in old.get('added_tokens', [])} | old['model']['vocab']
    ids_new = {t['content']: t['id'] for t in new.get('added_tokens', [])} | new['model']['vocab']
    if ids_old == ids_new:
        return state
    if set(ids_old) != set(ids_new):
        raise SystemExit(f'--init: {init_tokenizer} and {out_tokenizer} have different token sets; cannot continue training')
    perm = torch.tensor([ids_old[t] for t, _ in sorted(ids_new.items(), key=lambda kv: kv[1])])
    print(f'--init: remapping {len(perm)} vocabulary rows from {init_tokenizer}', flush=True)
    out = dict(state)
    for k in ('model.language_model.embed_tokens.weight', 'lm_head.weight'):
        out[k] = state[k][perm]
    return out


def f16_state(model) -> dict:
    # f16 weights under the transformers state-dict names (model.language_model.*, model.vision_tower.*,
    # model.multi_modal_projector.*, lm_head.*), which vlmscope reads like the legacy llava-hf names.
    return {k: v.detach().to('cpu', torch.float16).contiguous() for k, v in model.state_dict().items()}


def save_weights(model, out: str) -> dict:
    # Written to a temporary name and renamed, so a stop mid-write never leaves a truncated file.
    state = f16_state(model)
    tmp = os.path.join(out, 'model.safetensors.tmp')
    save_file(state, tmp, metadata={'format': 'pt'})
    os.replace(tmp, os.path.join(out, 'model.safetensors'))
    return state


def sequence_of(example, packed: bool):
    """One training row: token ids, position ids, segment ids and answer spans [(start, end, type)].

    Conversation rows are the scene's questions as one multi-turn chat (what `collect` chains look like). Packed rows
    hold the same questions as single-turn prompts (what `generate` / `eval` send) after one shared image prefix:
    each turn is its own segment that sees only the prefix and itself, with positions continuing the prefix as in a
    single-turn prompt, so every answer must come from the image and its own question.
    """
    _, ids, spans, types, single = example
    if not packed or single is None:
        return ids, list(range(len(ids))), [0] * len(ids), [(a, b, t) for (a, b), t in zip(spans, types)]
    prefix, turns = single
    seq, pos, seg = list(prefix), list(range(len(prefix))), [0] * len(prefix)
    out = []
    for k, ((tids, answer_start), typ) in enumerate(zip(turns, types)):
        at = len(seq)
        seq += tids
        pos += list(range(len(prefix), len(prefix) + len(tids)))
        seg += [k + 1] * len(tids)
        out.append((at + answer_start, at + len(tids), typ))
    return seq, pos, seg, out


COLOURS = ['red', 'green', 'blue', 'yellow', 'purple', 'orange', 'white', 'black']  # src/eval/synthetic.ts order
SUPERVISED_TYPES = ('spatial', 'vsr', 'sub:relational_reasoning', 'sub:spatial_perception')


def patch_centres(grid: int) -> torch.Tensor:
    """(grid * grid, 2): each patch's (column, row) scaled to [-1, 1], in patch order; what --read-sup and --pos-sup read."""
    k = torch.arange(grid * grid)
    return torch.stack([k % grid, k // grid], -1).float() * (2 / (grid - 1)) - 1


def attention_targets(ids: torch.Tensor, spans, colour_token: dict[int, int], patch_colour: torch.Tensor, image_id: int):
    """For each spatial-type turn of one packed row: (query position, [patches of A, of B], [centre of A, of B]).

    The query is the last prompt token (it predicts the answer); A and B are the objects named first and second in
    the turn's own question (named by their colour, unique in a scene); their patches are those the per-patch
    labels give that colour. Positions index the row's tokens (image tokens in patch order).
    """
    image_pos = (ids == image_id).nonzero().flatten()
    centre_of_patch = patch_centres(math.isqrt(len(patch_colour)))
    out = []
    prev_end = int(image_pos[-1]) + 1 if len(image_pos) else 0
    for start, end, typ in spans:
        if typ in SUPERVISED_TYPES:
            colours = [colour_token[int(t)] for t in ids[prev_end:start] if int(t) in colour_token]
            patches = [(patch_colour == c).nonzero().flatten() for c in colours[:2]]
            if patches and all(len(p) for p in patches):
                # Object centre: the mean of its patches' centres, the target of --read-sup.
                centres = [centre_of_patch[p].mean(0) for p in patches]
                out.append((start - 1, [image_pos[p] for p in patches], centres))
        prev_end = end
    return out


def known_heads(args) -> dict:
    """What each supervised head was trained to do (written as known_heads.json next to the weights).

    Head-finding methods are checked against it (vlmscope heads-benchmark): the heads named here are the planted
    answer, declared by the trainer that planted them rather than hard-coded in the benchmark.
    """
    heads = []
    if args.attn_sup > 0:
        for h, which in ((0, 'first'), (1, 'second')):
            heads.append({
                'tower': 'text',
                'layer': args.attn_layer,
                'head': h,
                'role': f'attend_{which}_named_object',
                'function': 'spatial',
                'trained_to': (
                    f'from the last prompt token, attend to the image patches of the object named {which} in the question '
                    f'(attention supervision, weight {args.attn_sup})'
                    + (f'; its output carries that object\'s centre (read supervision, weight {args.read_sup})' if args.read_sup > 0 else '')
                ),
                'query': 'last_prompt_token',
                'question_types': list(SUPERVISED_TYPES),
                'losses': ['attention'] + (['read'] if args.read_sup > 0 else []) + (['position'] if args.pos_sup > 0 else []),
            })
    # A stage continuing from --init keeps what earlier stages trained the same heads to do: its losses add to
    # theirs and their description stays, with this stage's supervision appended.
    previous = os.path.join(os.path.dirname(args.init), 'known_heads.json') if getattr(args, 'init', None) else None
    if heads and previous and os.path.exists(previous):
        with open(previous) as f:
            before = {(h['tower'], h['layer'], h['head'], h['role']): h for h in json.load(f).get('heads', [])}
        for h in heads:
            old = before.get((h['tower'], h['layer'], h['head'], h['role']))
            if old is None:
                continue
            h['losses'] = list(dict.fromkeys(old.get('losses', []) + h['losses']))
            if old.get('trained_to') and old['trained_to'] != h['trained_to']:
                h['trained_to'] = f"{old['trained_to']}; then continued with {h['trained_to'].split('(', 1)[-1].rstrip(')')}"
    return {'source': 'scripts/train_organism.py', 'heads': heads}


def build_batch(batch, pad_id: int, packed: list[bool]):
    rows = [sequence_of(e, p) for e, p in zip(batch, packed)]
    length = max(len(r[0]) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, length), dtype=torch.long)
    labels = torch.full((n, length), -100, dtype=torch.long)
    segment = torch.full((n, length), -1, dtype=torch.long)
    for i, (seq, pos, seg, spans) in enumerate(rows):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        position_ids[i, : len(pos)] = torch.tensor(pos)
        segment[i, : len(seg)] = torch.tensor(seg)
        for start, end, _ in spans:
            labels[i, start:end] = input_ids[i, start:end]
    # Additive 4-D mask (transformers passes a 4-D mask through as is): query q sees key k <= q that is real and in
    # the prefix (segment 0) or in q's own segment. Padding queries see key 0 only (no all-masked softmax rows).
    q_seg = segment[:, :, None]
    k_seg = segment[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = causal[None] & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    allowed[:, :, 0] |= segment < 0
    mask = torch.zeros((n, 1, length, length))
    mask.masked_fill_(~allowed[:, None], torch.finfo(torch.float32).min)
    return input_ids, mask, position_ids, labels, [r[3] for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--work', required=True, help='folder with train.jsonl and images/ from make-organism.ts')
    ap.add_argument('--out', required=True, help='the Hugging Face folder to write model.safetensors into')
    ap.add_argument('--steps', type=int, default=3000)
    ap.add_argument('--batch', type=int, default=16, help='conversations (one image each, ~10 answers) per step')
    ap.add_argument('--lr', type=float, default=1e-3)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--minutes', type=float, default=0, help='stop early after this many minutes (0 = no limit)')
    ap.add_argument('--init', help='start from these weights (a model.safetensors of the same architecture) to continue training')
    ap.add_argument('--device', default='cpu', help="torch device, e.g. 'cuda' on a GPU machine")
    ap.add_argument('--aux', type=float, default=0.5, help='weight of the auxiliary per-patch colour/shape loss on the vision features (0 = off)')
    ap.add_argument('--single', type=float, default=0.8, help='share of rows that pack single-turn prompts (the rest: multi-turn conversations)')
    ap.add_argument('--attn-sup', type=float, default=0.0, help='weight of the attention supervision of spatial questions (0 = off; see attention_supervision)')
    ap.add_argument('--attn-layer', type=int, default=1, help='text layer whose heads 0 and 1 are supervised by --attn-sup')
    ap.add_argument('--read-sup', type=float, default=0.0, help='weight of the loss that reads the named objects\' centres from the outputs of the heads --attn-sup supervises (0 = off)')
    ap.add_argument('--stop-after', type=int, default=0, help='end after this many steps, keeping the learning-rate schedule of --steps (0 = run all)')
    ap.add_argument('--pos-sup', type=float, default=0.0, help='weight of the loss that reads each image token\'s patch position from the supervised heads\' values with the --read-sup heads (0 = off)')
    ap.add_argument('--heads', help='file of the auxiliary (--aux, --read-sup) heads: loaded if it exists, written with every save')
    ap.add_argument('--head-warmup', type=int, default=0, help='steps during which the --aux and --read-sup heads train on detached features')
    ap.add_argument('--eval-every', type=int, default=500, help='print held-out teacher-forced accuracy every N steps')
    ap.add_argument('--save-every', type=int, default=250, help='write model.safetensors every N steps, so a stopped run keeps its progress')
    ap.add_argument('--reference', help='folder to write reference.json (trainer logits on 3 held-out examples) and their images into')
    args = ap.parse_args()
    if args.read_sup > 0 and args.attn_sup <= 0:
        raise SystemExit('--read-sup reads the heads that --attn-sup supervises: give --attn-sup too')
    if args.pos_sup > 0 and args.read_sup <= 0:
        raise SystemExit('--pos-sup trains the --read-sup heads: give --read-sup too')

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    with open(os.path.join(args.out, 'config.json')) as f:
        cfg_json = json.load(f)
    with open(os.path.join(args.out, 'preprocessor_config.json')) as f:
        pp = json.load(f)
    config = LlavaConfig(**cfg_json)
    config._attn_implementation = 'eager'
    model = LlavaForConditionalGeneration(config)
    if args.init:
        from safetensors.torch import load_file

        init_state = {k: v.float() for k, v in load_file(args.init).items()}
        init_tok = os.path.join(os.path.dirname(args.init), 'tokenizer.json')
        if os.path.exists(init_tok):
            init_state = remap_vocab(init_state, init_tok, os.path.join(args.out, 'tokenizer.json'))
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if missing or unexpected:
            raise SystemExit(f'--init {args.init} does not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}')
        print(f'initialised from {args.init}', flush=True)
    device = torch.device(args.device)
    model.to(device)
    model.train()
    mean = torch.tensor(pp['image_mean'], dtype=torch.float32)
    std = torch.tensor(pp['image_std'], dtype=torch.float32)
    pad_id = cfg_json['pad_token_id']
    vocab = json.load(open(os.path.join(args.out, 'tokenizer.json')))['model']['vocab']
    colour_token = {vocab[f'\u2581{c}']: i for i, c in enumerate(COLOURS) if f'\u2581{c}' in vocab}
    image_id = cfg_json['image_token_index']

    pixels, examples, patch_labels = load_examples(args.work)

    def probe_input(x: torch.Tensor, step: int) -> torch.Tensor:
        # The auxiliary heads start from random weights on every run (they are not shipped); while they fit, their
        # gradient would only push the model's features around, so for --head-warmup steps it reaches them alone.
        return x.detach() if step < args.head_warmup else x

    # Auxiliary vision loss (training only, not shipped): linear heads read the colour and the shape of the
    # object under each patch from the features the projector receives (vision_feature_layer). Dense per-patch
    # supervision teaches the ViT to bind colour and shape per location far sooner than the answer loss alone.
    aux_heads = None
    captured: dict[str, torch.Tensor] = {}
    if args.aux > 0 and patch_labels is not None:
        vt = model.model.vision_tower
        layer = cfg_json.get('vision_feature_layer', -2)
        n_layers = len(vt.encoder.layers)
        # hidden_states[k] is the output of encoder layer k - 1 (hidden_states[0] = embeddings).
        idx = (layer if layer >= 0 else n_layers + 1 + layer) - 1
        if idx < 0:
            raise SystemExit('--aux needs vision_feature_layer past the embeddings')

        def grab(_module, _inputs, output):
            captured['features'] = output[0] if isinstance(output, tuple) else output

        vt.encoder.layers[idx].register_forward_hook(grab)
        width = cfg_json['vision_config']['hidden_size']
        grid = cfg_json['vision_config']['image_size'] // cfg_json['vision_config']['patch_size']
        aux_heads = torch.nn.ModuleDict(
            {'colour': torch.nn.Linear(width, 8), 'shape': torch.nn.Linear(width, 4), 'row': torch.nn.Linear(width, grid), 'col': torch.nn.Linear(width, grid)}
        ).to(device)
        patch_row = (torch.arange(grid * grid) // grid).to(device)
        patch_col = (torch.arange(grid * grid) % grid).to(device)
        print(f'auxiliary per-patch loss (weight {args.aux}) on vision encoder layer {idx}', flush=True)

    def aux_loss(image_indices, step):
        feats = probe_input(captured['features'][:, 1:], step)  # drop CLS
        colour = patch_labels[0][image_indices].to(device)
        shape = patch_labels[1][image_indices].to(device)
        lc = torch.nn.functional.cross_entropy(aux_heads['colour'](feats).flatten(0, 1), colour.flatten(), ignore_index=-1)
        ls = torch.nn.functional.cross_entropy(aux_heads['shape'](feats).flatten(0, 1), shape.flatten())
        # Where each patch is, kept linearly readable in the features the LLM receives: spatial answers need the
        # position of the patches an attention head picks out, carried in their values.
        n = feats.shape[0]
        lr_ = torch.nn.functional.cross_entropy(aux_heads['row'](feats).flatten(0, 1), patch_row.repeat(n))
        lcol = torch.nn.functional.cross_entropy(aux_heads['col'](feats).flatten(0, 1), patch_col.repeat(n))
        return lc + ls + 0.5 * (lr_ + lcol)

    # Read supervision (training only, not shipped): linear heads predict the centre of the object each supervised
    # head attends to from that head's output at the query (the o_proj input), so the values carry position.
    read_heads = None
    if args.read_sup > 0:
        attn_module = model.model.language_model.layers[args.attn_layer].self_attn
        head_dim = cfg_json['text_config']['hidden_size'] // cfg_json['text_config']['num_attention_heads']
        attn_module.o_proj.register_forward_pre_hook(lambda _m, inputs: captured.__setitem__('heads', inputs[0]))
        read_heads = torch.nn.ModuleList([torch.nn.Linear(head_dim, 2) for _ in range(2)]).to(device)
        # --pos-sup: the same linear reads applied to each image token's value vector give that patch's position. A
        # head's output is its attention-weighted sum of values, so reading it gives the attention-weighted mean
        # position: dense per-patch supervision of the code the read of an object's centre relies on.
        attn_module.v_proj.register_forward_hook(lambda _m, _inputs, output: captured.__setitem__('values', output))
        kv_group = cfg_json['text_config']['num_attention_heads'] // cfg_json['text_config'].get('num_key_value_heads', cfg_json['text_config']['num_attention_heads'])
        patch_centre = patch_centres(cfg_json['vision_config']['image_size'] // cfg_json['vision_config']['patch_size']).to(device)

    def position_loss(ids, step):
        terms = []
        for r in range(ids.shape[0]):
            image_pos = (ids[r] == image_id).nonzero().flatten().to(device)
            for h, read in enumerate(read_heads):
                kv = h // kv_group
                v = captured['values'][r, image_pos, kv * head_dim : (kv + 1) * head_dim]
                terms.append(((read(probe_input(v, step)) - patch_centre) ** 2).sum(-1).mean())
        return torch.stack(terms).mean()

    held = examples[-128:]
    train = examples[:-128]
    n_params = sum(p.numel() for p in model.parameters())
    print(f'{len(train)} training conversations over {pixels.shape[0]} images, {len(held)} held out; {n_params / 1e6:.2f}M parameters', flush=True)

    # The auxiliary heads are training state, not model weights: --heads keeps them across stages, so a stage that
    # continues from --init does not start them from random weights (whose first gradients disturb the features).
    extra_heads = {name: m for name, m in (('aux', aux_heads), ('read', read_heads)) if m is not None}
    params = list(model.parameters()) + [p for m in extra_heads.values() for p in m.parameters()]
    if args.heads and os.path.exists(args.heads):
        saved = torch.load(args.heads, map_location=device)
        for name, m in extra_heads.items():
            if name in saved:
                m.load_state_dict(saved[name])
        print(f'auxiliary heads from {args.heads}: {sorted(saved)}', flush=True)

    def save_all():
        # What the supervised heads were trained to do; an unsupervised stage keeps the previous stage's file (its
        # heads keep their job while training continues).
        declared = known_heads(args)
        if declared['heads']:
            tmp = os.path.join(args.out, 'known_heads.json.tmp')
            with open(tmp, 'w') as f:
                json.dump(declared, f, indent=1)
            os.replace(tmp, os.path.join(args.out, 'known_heads.json'))
        if args.heads:
            tmp = args.heads + '.tmp'
            torch.save({name: m.state_dict() for name, m in extra_heads.items()}, tmp)
            os.replace(tmp, args.heads)
        return save_weights(model, args.out)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, args.steps))))
    )

    def held_accuracy(packed: bool = True):
        # Teacher-forced answers (all answer tokens right = the greedy answer is right). Packed = single-turn
        # prompts, what `vlmscope eval` measures; otherwise the chained conversation turns.
        model.eval()
        correct = 0
        total = 0
        by_type: dict[str, list[int]] = {}
        with torch.no_grad():
            for i in range(0, len(held), 16):
                b = held[i : i + 16]
                ids, mask, pos, _, spans = build_batch(b, pad_id, [packed] * len(b))
                pv = normalise(pixels[[e[0] for e in b]], mean, std)
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), pixel_values=pv.to(device)).logits.cpu()
                for j, row in enumerate(spans):
                    for start, end, typ in row:
                        ok = int(torch.equal(logits[j, start - 1 : end - 1].argmax(-1), ids[j, start:end]))
                        correct += ok
                        total += 1
                        by_type.setdefault(typ, [0, 0])
                        by_type[typ][0] += ok
                        by_type[typ][1] += 1
        model.train()
        return correct / total, {k: round(v[0] / v[1], 3) for k, v in sorted(by_type.items())}

    if args.steps == 0:
        # Only the trainer-parity reference of the weights given with --init.
        if not (args.init and args.reference):
            raise SystemExit('--steps 0 writes only the reference: give --init and --reference')
        write_reference(model, f16_state(model), held[:3], pixels, mean, std, args)
        return

    t0 = time.time()
    order = rng.permutation(len(train))
    at = 0
    losses = []
    aux_losses = []
    attn_losses = []
    read_losses = []
    pos_losses = []
    for step in range(args.steps):
        if at + args.batch > len(order):
            order = rng.permutation(len(train))
            at = 0
        b = [train[k] for k in order[at : at + args.batch]]
        at += args.batch
        # No draw without packed data or with --single 0, so such runs keep the batch order of conversation-only runs.
        packed = [bool(args.single > 0 and e[4] is not None and rng.random() < args.single) for e in b]
        ids, mask, pos, labels, spans_of = build_batch(b, pad_id, packed)
        pv = normalise(pixels[[e[0] for e in b]], mean, std)
        sup = args.attn_sup > 0 and patch_labels is not None
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=pos.to(device),
            pixel_values=pv.to(device),
            labels=labels.to(device),
            output_attentions=sup,
        )
        loss = out.loss
        total = loss
        if sup:
            # Attention supervision (training only): in text layer --attn-layer, head 0 of the last prompt token
            # attends to the first-named object's patches and head 1 to the second's, for spatial-type turns. It
            # teaches the selective retrieval that position questions need (content questions can be answered from
            # a bag of patch features, which the model otherwise settles for); the MLPs learn the comparison.
            att = out.attentions[args.attn_layer]
            targets = []
            for r in range(len(b)):
                if not packed[r]:
                    continue
                for q, groups, centres in attention_targets(ids[r], spans_of[r], colour_token, patch_labels[0][b[r][0]], image_id):
                    for h, g in enumerate(groups):
                        targets.append((r, h, q, g, centres[h]))
            terms = []
            reads = []
            if targets:
                # The supervised query rows are gathered once, then each term sums its object's patches: the same
                # values and gradients as indexing the (batch, heads, L, L) attention per term, whose backward
                # wrote a full-size gradient tensor per term (most of a step's time on long packed rows).
                rr = torch.tensor([t[0] for t in targets], device=device)
                hh = torch.tensor([t[1] for t in targets], device=device)
                qq = torch.tensor([int(t[2]) for t in targets], device=device)
                rows = att[rr, hh, qq]
                head_out = captured['heads'][rr, qq] if read_heads is not None else None
                for k, (r, h, q, g, centre) in enumerate(targets):
                    terms.append(-torch.log(rows[k, g.to(device)].sum() + 1e-6))
                    if read_heads is not None:
                        got = read_heads[h](probe_input(head_out[k, h * head_dim : (h + 1) * head_dim], step))
                        reads.append(((got - centre.to(device)) ** 2).sum())
            if terms:
                a_loss = torch.stack(terms).mean()
                attn_losses.append(a_loss.item())
                total = total + args.attn_sup * a_loss
            if reads:
                r_loss = torch.stack(reads).mean()
                read_losses.append(r_loss.item())
                total = total + args.read_sup * r_loss
        if read_heads is not None and args.pos_sup > 0:
            p_loss = position_loss(ids, step)
            pos_losses.append(p_loss.item())
            total = total + args.pos_sup * p_loss
        if aux_heads is not None:
            aux = aux_loss(torch.tensor([e[0] for e in b]), step)
            aux_losses.append(aux.item())
            total = total + args.aux * aux
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step == args.steps - 1:
            acc, by_type = held_accuracy() if (step + 1) % args.eval_every == 0 or step == args.steps - 1 else (None, None)
            elapsed = time.time() - t0
            msg = f'step {step + 1}/{args.steps} loss {np.mean(losses[-100:]):.4f}'
            if aux_losses:
                msg += f' aux {np.mean(aux_losses[-100:]):.4f}'
            if attn_losses:
                msg += f' attn {np.mean(attn_losses[-100:]):.4f}'
            if read_losses:
                msg += f' read {np.mean(read_losses[-100:]):.4f}'
            if pos_losses:
                msg += f' pos {np.mean(pos_losses[-100:]):.4f}'
            msg += f' lr {sched.get_last_lr()[0]:.2e} {elapsed / 60:.1f} min'
            if acc is not None:
                msg += f' held-out single-turn answer accuracy {acc:.3f} {by_type}'
            print(msg, flush=True)
            if args.save_every and (step + 1) % args.save_every == 0:
                save_all()
            if args.stop_after and step + 1 >= args.stop_after:
                print(f'stopping after {step + 1} steps (--stop-after)', flush=True)
                break
            if args.minutes and elapsed > args.minutes * 60:
                print('time limit reached', flush=True)
                break

    final_loss = float(np.mean(losses[-100:]))
    acc, by_type = held_accuracy()
    conv_acc, conv_by_type = held_accuracy(packed=False)
    state = save_all()
    summary = {
        'steps': step + 1,
        'batch': args.batch,
        'conversations_seen': (step + 1) * args.batch,
        'train_conversations': len(train),
        'final_loss': round(final_loss, 4),
        'final_aux_loss': round(float(np.mean(aux_losses[-100:])), 4) if aux_losses else None,
        'held_out_teacher_forced_accuracy': round(acc, 4),
        'held_out_by_type': by_type,
        'held_out_conversation_accuracy': round(conv_acc, 4),
        'held_out_conversation_by_type': conv_by_type,
        'minutes': round((time.time() - t0) / 60, 1),
        'seed': args.seed,
        'parameters': n_params,
    }
    with open(os.path.join(args.work, 'train-summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary), flush=True)
    if args.reference:
        write_reference(model, state, held[:3], pixels, mean, std, args)


def write_reference(model, state, examples, pixels, mean, std, args):
    # The trainer's own forward on the weights as shipped (f16, evaluated in float64, eager attention): the
    # engine must reproduce these logits at the last prompt position within 1e-3.
    import shutil

    model.to('cpu')
    model.load_state_dict({k: v.to(torch.float64) for k, v in state.items()})
    model.to(torch.float64).eval()
    os.makedirs(args.reference, exist_ok=True)
    with open(os.path.join(args.work, 'train.jsonl')) as f:
        image_of = {}
        for line in f:
            ex = json.loads(line)
            image_of.setdefault(ex['image'], ex['image'])
    names = {v: k for k, v in ((k, i) for i, k in enumerate(image_of))}
    out = []
    with torch.no_grad():
        for img_idx, ids, spans, types, _ in examples:
            # The first turn: the single-turn prompt vlmscope generate/eval send.
            start, end = spans[0]
            typ = types[0]
            prompt = ids[:start]
            pv = normalise(pixels[[img_idx]], mean, std).to(torch.float64)
            logits = model(input_ids=torch.tensor([prompt]), pixel_values=pv).logits[0, -1]
            src = names[img_idx]
            dst = os.path.basename(src)
            shutil.copy(os.path.join(args.work, src), os.path.join(args.reference, dst))
            out.append({'image': dst, 'ids': prompt, 'type': typ, 'answer_ids': ids[start:end], 'last_logits': [round(float(x), 6) for x in logits]})
    with open(os.path.join(args.reference, 'reference.json'), 'w') as f:
        json.dump({'source': 'scripts/train_organism.py (transformers LlavaForConditionalGeneration, float64, eager)', 'examples': out}, f)
    print(f'wrote {len(out)} reference examples to {args.reference}', flush=True)


if __name__ == '__main__':
    main()
