"""An independent, literal implementation of DESIGN.md's description of the reference code, and of the
benchmarks' protocol (mmcv's resize, mmseg 0.27's sliding windows) around it.

It follows the reference's own style on purpose (forward hooks, a deep copy whose positional
embedding is overwritten in place, q/k/v projected together then split) so that the engine's faster
formulation is checked against something written differently.
"""
import copy

import cv2
import numpy as np
import torch
import torch.nn.functional as F

MEAN = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
STD = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)


def text_embeddings(model, tokenizer, names, templates):
    """open_clip's plain encode_text over every template, per class: normalise, mean, normalise."""
    rows = []
    with torch.no_grad():
        for name in names:
            out = model.encode_text(tokenizer([t(name) for t in templates]))
            out = out / out.norm(dim=-1, keepdim=True)
            out = out.mean(dim=0)
            rows.append(out / out.norm())
    return torch.stack(rows)


def clip_features(model, pixels):
    """MaskCLIP features (B, E, h, w) and block-10 ln_2 features (B, D, h, w) via hooks on a copy."""
    visual = copy.deepcopy(model.visual)
    patch = visual.conv1.kernel_size[0]
    batch, _, height, width = pixels.shape
    h, w = height // patch, width // patch
    pos = visual.positional_embedding.data
    side = int(round((pos.shape[0] - 1) ** 0.5))
    grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    visual.positional_embedding.data = torch.cat([pos[:1], grid.flatten(2).transpose(1, 2)[0]])

    captured = {}
    blocks = visual.transformer.resblocks
    blocks[-2].register_forward_hook(lambda m, i, o: captured.__setitem__("x", o))
    blocks[-3].ln_2.register_forward_hook(lambda m, i, o: captured.__setitem__("ln2", o))
    with torch.no_grad():
        visual(pixels)
        x = captured["x"]
        block = blocks[-1]
        y = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)
        c = y.shape[-1] // 3
        q, k, v = (F.linear(part, block.attn.out_proj.weight, block.attn.out_proj.bias) for part in y.split(c, -1))
        v = v + x
        v = v + block.mlp(block.ln_2(v))
        v = visual.ln_post(v)[:, 1:] @ visual.proj
    maskclip = v.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
    ln2 = captured["ln2"][:, 1:].reshape(batch, h, w, -1).permute(0, 3, 1, 2)
    return maskclip, ln2


def patch_output(model, heads_state, text, pixels, gamma=0.2, delta=0.99, background=False, patch=16):
    """The reference model's forward on a (1, 3, H, W) image in [0, 1]: (1, K, h, w) on the padded patch grid."""
    height, width = pixels.shape[-2:]
    pixels = F.pad(pixels, (0, -width % patch, 0, -height % patch), value=0)
    pixels = (pixels - MEAN) / STD
    maskclip, feats = clip_features(model, pixels)
    b, _, h, w = maskclip.shape
    with torch.no_grad():
        pad = F.pad(feats, (1, 1, 1, 1), mode="replicate")
        proj = F.conv2d(pad, heads_state["obj_proj.weight"], heads_state["obj_proj.bias"]).reshape(b, -1, h * w)
        proj = proj / proj.norm(dim=1, keepdim=True)
        corrs = torch.matmul(proj.permute(0, 2, 1), proj).reshape(b, h * w, h, w)
        normed = feats / feats.norm(dim=1, keepdim=True)
        objectness = F.conv2d(normed, heads_state["bkg_decoder.weight"], heads_state["bkg_decoder.bias"])
        corrs[corrs < gamma] = 0.0
        pooled = torch.einsum("bnij, bcij -> bcn", corrs, maskclip)
        pooled = (pooled / (corrs.flatten(-2, -1).sum(dim=-1)[:, None] + 1e-6)).reshape(b, -1, h, w)
        pooled = pooled / pooled.norm(dim=1, keepdim=True)
        output = F.softmax(F.conv2d(pooled, text[:, :, None, None]) * 100, dim=1)
        if background:
            found = (torch.sigmoid(objectness).reshape(-1) > 0.5)
            uncertain = (output.max(dim=1)[0] < delta).reshape(-1)
            output.reshape(1, output.shape[1], -1)[:, 0, uncertain & ~found] = 1.0
    return output


def segment(model, heads_state, text, image, patch=16, **options):
    """Whole-image pass as in the reference demo; returns (probs (K, H, W) un-normalised, labels)."""
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    height, width = pixels.shape[-2:]
    output = patch_output(model, heads_state, text, pixels, patch=patch, **options)
    output = F.interpolate(output, scale_factor=patch, mode="bilinear", align_corners=False)
    output = output[..., :height, :width][0]
    return output.numpy(), output.argmax(dim=0).numpy().astype(np.int32)


def imrescale(image, img_scale=(2048, 448)):
    """mmcv.imrescale as the test pipeline's keep-ratio Resize calls it: cv2 bilinear on the uint8 image."""
    height, width = image.shape[:2]
    factor = min(max(img_scale) / max(height, width), min(img_scale) / min(height, width))
    size = (int(width * float(factor) + 0.5), int(height * float(factor) + 0.5))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def slide_segment(model, heads_state, text, image, crop=448, stride=224, **options):
    """The benchmarks' path: Resize, ImageToTensorV2, mmseg 0.27 slide_inference around the evaluation's
    encode_decode (the padded grid's output resized to the window), then rescaled to the original size.

    Returns (probs (K, H, W) as slide_inference leaves them, before mmseg's final softmax; labels).
    """
    img = torch.from_numpy(imrescale(image).copy()).permute(2, 0, 1)[None].contiguous() / 255.0
    _, _, h_img, w_img = img.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds = count = None
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2, x2 = min(h_idx * stride + crop, h_img), min(w_idx * stride + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            crop_img = img[:, :, y1:y2, x1:x2]
            logit = patch_output(model, heads_state, text, crop_img, **options)
            logit = F.interpolate(logit, size=crop_img.shape[-2:], mode="bilinear", align_corners=False)
            if preds is None:
                preds = img.new_zeros((1, logit.shape[1], h_img, w_img))
                count = img.new_zeros((1, 1, h_img, w_img))
            preds += F.pad(logit, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    preds = F.interpolate(preds / count, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    return preds.numpy(), preds.argmax(dim=0).numpy().astype(np.int32)
