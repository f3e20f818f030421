"""``ulseg coseg-predict``: segment each lesion jointly with its nearest training lesions (co-segmentation paper Sec. 2.2).

The paper feeds the co-segmentation network "a pair of images" and keeps the mask of each;
at test time a lesion needs a partner, and the paper pairs test lesions "from each
cluster" (Sec. 3.1).  Here every input lesion is embedded with the encoder that built
the clusters (``pairs.json``'s ``embedding``, :mod:`.embed`) and paired with its
``partners`` nearest training lesions in that space (Euclidean on L2-normalised vectors,
i.e. the cosine order; nearest neighbours rather than a cluster draw, so the result does
not depend on a random choice).  Partners are images only (their labels are never read),
so every preprocessed training case may serve, whichever fold the model trained on.

Everything else is nnU-Net's: ``nnUNetPredictor`` loads the model (``-f`` folds are
averaged as in ``nnUNetv2_predict``), its preprocessor prepares each input, its sliding
window and mirroring run on the input; each window is paired with the partner's
preprocessed image cropped or padded about its centre to the patch size (crops are
centred on their lesion); logits are averaged over the partners (as nnU-Net averages
folds) and written by nnU-Net's ``export_prediction_from_logits``: the same file names
(``<case><file_ending>``), geometry and label values as ``nnUNetv2_predict``, so
``ulseg evaluate`` scores the folder as it is.  ``-num_parts/-part_id`` split the inputs
as in ``nnUNetv2_predict``.  ``crf``: the paper's optional dense CRF (:mod:`.crf`) on the
averaged probabilities in the input's geometry, then nnU-Net's writer.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nnunet_ulseg.coseg.build import preprocessed_cases
from nnunet_ulseg.coseg.crf import available as crf_available
from nnunet_ulseg.coseg.crf import dense_crf
from nnunet_ulseg.coseg.embed import center_tile, embed_tiles, load_encoder_model, normalise
from nnunet_ulseg.coseg.pairs import EMBEDDINGS_FILE, PAIRS_FILE, nearest_partners, read_embeddings
from nnunet_ulseg.nnunet_layout import NNUNetPaths


class PartnerNetwork(nn.Module):
    """Wraps a pair network so that ``forward(x [B, ...])`` pairs every sample with one fixed partner image.

    The batch ``[x0, p, x1, p, ...]`` goes through the pair network and the outputs of the
    ``x`` samples come back.  ``load_state_dict``/``state_dict`` are the wrapped network's,
    so nnU-Net's predictor can load each fold's weights into it.
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.partner: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.partner is None:
            raise RuntimeError("PartnerNetwork: set .partner before predicting")
        p = self.partner.to(device=x.device, dtype=x.dtype).unsqueeze(0).expand_as(x)
        pairs = torch.stack((x, p), dim=1).flatten(0, 1)
        return self.network(pairs)[0::2]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)

    def state_dict(self, *args, **kwargs):
        return self.network.state_dict(*args, **kwargs)


def input_cases(folder: Path, file_ending: str, num_inputs: int) -> dict[str, list[str]]:
    """Case -> its channel files ``<case>_XXXX<file_ending>`` in ``folder`` (nnU-Net's own listing)."""
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder, get_identifiers_from_splitted_dataset_folder

    if not folder.is_dir():
        raise FileNotFoundError(f"-i {folder}: not a folder")
    cases = [str(c) for c in get_identifiers_from_splitted_dataset_folder(str(folder), file_ending)]
    if not cases:
        raise ValueError(f"-i {folder}: no images named <case>_0000{file_ending}")
    lists = create_lists_from_splitted_dataset_folder(str(folder), file_ending, cases)
    out = {}
    for case, files in zip(cases, lists):
        if len(files) != num_inputs:
            raise ValueError(f"-i {folder}: case {case} has {len(files)} channel file(s), the model needs {num_inputs}")
        out[case] = files
    return out


def write_with_crf(logits: np.ndarray, props: dict, files: list[str], pm, cm, dj: dict, ofile_truncated: str) -> None:
    """nnU-Net's logits -> probabilities in the input's geometry -> dense CRF per slice -> nnU-Net's writer."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    lm = pm.get_label_manager(dj)
    _, probs = convert_predicted_logits_to_segmentation_with_correct_shape(logits, pm, cm, lm, props,
                                                                           return_probabilities=True)
    rw = pm.image_reader_writer_class()
    image = rw.read_images(files)[0][0]  # first channel, [Z, Y, X] (Z = 1 for a 2D crop)
    probs = np.asarray(probs)
    seg = np.stack([dense_crf(probs[:, z], image[z]) for z in range(image.shape[0])])
    rw.write_seg(seg.astype(np.uint8), ofile_truncated + dj["file_ending"], props)


def coseg_predict(paths: NNUNetPaths, dataset: str, input_dir: Path, output_dir: Path, trainer: str,
                  plans: str = "nnUNetPlans", configuration: str = "2d", folds: Sequence | None = (0,),
                  checkpoint: str = "checkpoint_final.pth", partners: int = 1, device: str = "cpu",
                  tta: bool = True, num_parts: int = 1, part_id: int = 0, crf: bool = False,
                  progress: bool = True) -> dict:
    """Predict every input case (of this part) paired with its ``partners`` nearest training lesions."""
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

    if crf and not crf_available():
        raise ValueError("--crf needs the optional package pydensecrf2 (pip install pydensecrf2)")
    if not 0 <= part_id < num_parts:
        raise ValueError(f"-part_id must be in 0..{num_parts - 1}, got {part_id}")
    name = paths.dataset_name(dataset)
    pre = paths.preprocessed_dataset(name)
    pairs_json = pre / PAIRS_FILE
    if not pairs_json.is_file():
        raise FileNotFoundError(f"{pairs_json}: no lesion pairs; run `ulseg coseg-pairs -d {dataset}` first")
    embedding = json.loads(pairs_json.read_text())["embedding"]
    bank_cases, bank = read_embeddings(pre / EMBEDDINGS_FILE)

    model_dir = paths.model_dir(name, trainer, plans, configuration)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no trained model (train -tr {trainer} -c {configuration} first)")
    torch_device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=torch_device.type != "cpu", device=torch_device,
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), None if folds is None else tuple(folds), checkpoint)
    wrapper = PartnerNetwork(predictor.network)
    predictor.network = wrapper
    pm, cm, dj = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    encoder = load_encoder_model(embedding["model"], embedding["folds"] or None, embedding["checkpoint"], device)

    cases = input_cases(Path(input_dir), dj["file_ending"], determine_num_input_channels(pm, cm, dj))
    todo = sorted(cases)[part_id::num_parts]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for fname in ("dataset.json", "plans.json"):
        shutil.copy2(model_dir / fname, output_dir / fname)
    train_data = preprocessed_cases(pre / cm.data_identifier)
    preprocessor = cm.preprocessor_class(verbose=False)
    chosen = {}
    for case in tqdm(todo, desc="coseg-predict", unit="case", disable=not progress):
        data, _, props = preprocessor.run_case(cases[case], None, pm, cm, dj)
        query = normalise(embed_tiles(encoder.network, [center_tile(data, encoder.configuration_manager.patch_size)],
                                      device=device, progress=False))
        picks = [bank_cases[i] for i in nearest_partners(query, bank, partners)[0]]
        chosen[case] = picks
        logits = None
        for partner in picks:
            tile = center_tile(np.asarray(train_data.load_case(partner)[0][:]), cm.patch_size)
            wrapper.partner = torch.from_numpy(tile)
            out = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(np.ascontiguousarray(data)))
            logits = out if logits is None else logits + out
        logits = (logits / len(picks)).float().numpy()
        if crf:
            write_with_crf(logits, props, cases[case], pm, cm, dj, str(output_dir / case))
        else:
            export_prediction_from_logits(logits, props, cm, pm, dj, str(output_dir / case), False)
    report = {"trainer": trainer, "folds": list(folds or []), "partners": partners, "crf": crf, "pairs": chosen}
    (output_dir / f"coseg_partners_part{part_id}.json").write_text(json.dumps(report, indent=1))
    return report
