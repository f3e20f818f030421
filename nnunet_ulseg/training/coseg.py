"""The co-segmentation trainer base: pair-sampling loader, CoSegNet, the paper's optimisers (co-segmentation paper Sec. 2.2-2.4).

* **Pairs** (Sec. 3.1, "we pair the images from each cluster"): :class:`PairDataLoader`
  is nnU-Net's ``nnUNetDataLoader`` with one change, :meth:`~PairDataLoader.get_indices`:
  a batch of ``2N`` is N anchors drawn uniformly from the loader's cases, each followed
  by a partner drawn uniformly from the anchor's k-means cluster (``clusters.csv`` of
  ``ulseg coseg-pairs``) among the *same loader's* cases, so a pair never crosses
  nnU-Net's train/validation split, whichever split is installed.  Everything else is
  nnU-Net's: patch cropping with foreground oversampling and the whole augmentation
  pipeline, applied per image, independently for the two images of a pair (the paper's
  pairs are two different lesions; nothing ties their geometry).  A lesion alone in its
  cluster on its side of the split is paired with itself.
* **Batch**: ``[a0, b0, a1, b1, ...]`` (CoSegNet's contract: samples ``2i`` and ``2i+1``
  are a pair).  nnU-Net's planned batch size is rounded *up* to the next even number
  (per DDP rank, since each rank's batch is paired on its own) and the log says so; the
  paper uses 20 images (10 pairs).
* **Network**: CoSegNet (``nnunet_ulseg.networks.coseg``) built by
  ``build_network_architecture``, which nnU-Net's predictor also calls; at inference it
  pairs an unpaired image with itself (``self_pair_when_odd``), which is what
  ``nnUNetv2_predict`` and nnU-Net's final validation get.  InstanceNorm (affine), nnU-Net's
  choice, instead of the ResNet's BatchNorm, for the reason given in
  :mod:`~nnunet_ulseg.training.ahrnet` (nnU-Net's small 2d batches; eval-mode BatchNorm
  statistics lag the weights early in training); DRN-MG encoder and decoder D2 (the
  paper's best rows) unless a variant says otherwise.  ``ulseg coseg-predict`` pairs
  each lesion with its nearest training lesions instead (Sec. 2.2 inference).  One output,
  no deep supervision (the paper's decoders D1/D2 have one).
* **Loss**: the paper names none.  nnU-Net's Dice + CE with the ignore label (the
  ``"dice_ce"`` loss of :class:`~nnunet_ulseg.training.weak.nnUNetTrainerWeak`), so the row
  differs from nnU-Net's own row only in network and pairing; ignore pixels are masked
  by both terms.  The loss is a plain function of ``(output, target)`` per batch: no state
  shared across ranks; every CoSegNet parameter takes part in each forward (DDP with
  ``find_unused_parameters=False``, nnU-Net's setting, needs that).
* **Optimiser** (Sec. 2.4): SGD, initial lr 0.01, momentum 0.99, weight decay 5e-4, poly
  decay with exponent 0.9 (``"sgd"``; nnU-Net's own optimiser and ``PolyLRScheduler`` are
  exactly this form, with Nesterov momentum, which the paper does not mention, and the
  decay stepped per epoch instead of per iteration: at 250 iterations an epoch the two
  curves differ by less than one epoch's step).  ``"adam"``: Adam, lr 1e-5, weight decay
  5e-4 (L2), constant (the paper gives Adam no schedule).
* **Pseudo masks** (Sec. 2.1): the paper trains on GrabCut masks from the RECIST marks;
  convert with ``--pseudo grabcut`` (GrabCut-R of the pseudo-mask registry) to reproduce
  it, or ``--pseudo ellipse``; nothing here depends on which.
* **Not done**: the paper's 128 x 128 resize (nnU-Net's planned patch is kept, as in every
  trainer here) and its two epochs of 12,000 iterations (nnU-Net's epochs or the short
  schedules).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_ulseg.coseg.pairs import CLUSTERS_FILE, read_clusters
from nnunet_ulseg.training.weak import nnUNetTrainerWeak

#: Sec. 2.4
SGD_LR, SGD_MOMENTUM, WEIGHT_DECAY = 1e-2, 0.99, 5e-4
ADAM_LR = 1e-5
OPTIMIZERS = ("sgd", "adam")


class PairDataLoader(nnUNetDataLoader):
    """nnU-Net's loader whose batches are ``batch_size // 2`` interleaved same-cluster pairs."""

    def __init__(self, data, batch_size: int, *args, clusters: Mapping[str, int], **kwargs):
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"a pair batch needs an even batch size >= 2, got {batch_size}")
        super().__init__(data, batch_size, *args, **kwargs)
        missing = [c for c in self.indices if c not in clusters]
        if missing:
            raise ValueError(f"{CLUSTERS_FILE}: no cluster for {len(missing)} case(s) ({', '.join(missing[:5])}); "
                             f"re-run `ulseg coseg-pairs` for this dataset")
        groups: dict[int, list[str]] = defaultdict(list)
        for case in self.indices:
            groups[int(clusters[case])].append(case)
        self.cluster_of = {c: int(clusters[c]) for c in self.indices}
        self.partners = {c: [o for o in groups[self.cluster_of[c]] if o != c] or [c] for c in self.indices}

    def get_indices(self):
        anchors = np.random.choice(self.indices, self.batch_size // 2, replace=True)
        keys = []
        for a in anchors:
            options = self.partners[a]
            keys += [a, options[np.random.randint(len(options))]]
        return keys


class nnUNetTrainerCoSegBase(nnUNetTrainerWeak):
    """CoSegNet on same-cluster lesion pairs; the variants set the class attributes."""

    seg_loss = "dice_ce"
    #: CoSegNet's attention: "csa" (SE + mean spatial, Table 1-3 default) or the Table 3 variants
    coseg_attention: str = "csa"
    #: CoSegNet's encoder depth (the paper's ResNet-101 is too slow for CPUs; named in the network)
    coseg_depth: str = "resnet26"
    #: "d2" (DeepLabv3+-style with low-level features, Tables 2-3's best) or "d1" (Table 1)
    coseg_decoder: str = "d2"
    #: last-stage dilations: (2, 4, 8) = DRN-MG (the paper's best), None = DRN
    coseg_multi_grid: tuple | None = (2, 4, 8)
    #: "sgd" (poly, Sec. 2.4, the paper's best) or "adam"
    coseg_optimizer: str = "sgd"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.coseg_optimizer not in OPTIMIZERS:
            raise ValueError(f"{type(self).__name__}.coseg_optimizer must be one of {OPTIMIZERS}, "
                             f"got {self.coseg_optimizer!r}")
        self.enable_deep_supervision = False
        self.weight_decay = WEIGHT_DECAY
        self.initial_lr = SGD_LR if self.coseg_optimizer == "sgd" else ADAM_LR
        self._odd_batch = None

    # ------------------------------------------------------------------ network
    @classmethod
    def arch_kwargs(cls) -> tuple[dict, list[str]]:
        from nnunet_ulseg.networks.coseg import coseg_arch_kwargs

        return coseg_arch_kwargs(depth=cls.coseg_depth, attention=cls.coseg_attention, decoder=cls.coseg_decoder,
                                 multi_grid=cls.coseg_multi_grid, norm_op=torch.nn.InstanceNorm2d,
                                 norm_op_kwargs={"eps": 1e-5, "affine": True})

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True):
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        from nnunet_ulseg.networks.coseg import NETWORK_CLASS_NAME

        kwargs, requires_import = cls.arch_kwargs()
        net = get_network_from_plans(NETWORK_CLASS_NAME, kwargs, requires_import, num_input_channels,
                                     num_output_channels, allow_init=True)
        # nnU-Net's predictor (nnUNetv2_predict, the final validation) feeds one tile at a time: pair it
        # with itself.  Training batches are always whole pairs (PairDataLoader refuses odd batch sizes).
        net.self_pair_when_odd = True
        return net

    def _get_deep_supervision_scales(self):
        return None

    # ------------------------------------------------------------------ batches
    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if self.batch_size % 2:
            self._odd_batch = self.batch_size
            self.batch_size += 1

    def get_dataloaders(self):
        """nnU-Net 2.8's ``get_dataloaders`` with :class:`PairDataLoader` for both loaders.

        Same transforms, patch sizes, oversampling and augmenters as nnU-Net's; nnU-Net builds
        its loader class inline, so the body is restated here rather than patched.
        """
        from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
        from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
        from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
        from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        clusters = read_clusters(f"{self.preprocessed_dataset_folder_base}/{CLUSTERS_FILE}")
        patch_size = self.configuration_manager.patch_size
        ds_scales = self._get_deep_supervision_scales()
        rotation, dummy_2d, initial_patch_size, mirror_axes = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        lm = self.label_manager
        regions = lm.foreground_regions if lm.has_regions else None
        tr_transforms = self.get_training_transforms(
            patch_size, rotation, ds_scales, mirror_axes, dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=lm.foreground_labels, regions=regions, ignore_label=lm.ignore_label)
        val_transforms = self.get_validation_transforms(ds_scales, is_cascaded=self.is_cascaded,
                                                        foreground_labels=lm.foreground_labels, regions=regions,
                                                        ignore_label=lm.ignore_label)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()
        common = dict(oversample_foreground_percent=self.oversample_foreground_percent, sampling_probabilities=None,
                      pad_sides=None, probabilistic_oversampling=self.probabilistic_oversampling, clusters=clusters)
        dl_tr = PairDataLoader(dataset_tr, self.batch_size, initial_patch_size, patch_size, lm,
                               transforms=tr_transforms, **common)
        dl_val = PairDataLoader(dataset_val, self.batch_size, patch_size, patch_size, lm,
                                transforms=val_transforms, **common)
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            gen_tr, gen_val = SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
        else:
            pin = self.device.type == "cuda"
            gen_tr = NonDetMultiThreadedAugmenter(data_loader=dl_tr, transform=None, num_processes=n_proc,
                                                  num_cached=max(6, n_proc // 2), seeds=None, pin_memory=pin,
                                                  wait_time=0.002)
            gen_val = NonDetMultiThreadedAugmenter(data_loader=dl_val, transform=None,
                                                   num_processes=max(1, n_proc // 2),
                                                   num_cached=max(3, n_proc // 4), seeds=None, pin_memory=pin,
                                                   wait_time=0.002)
        next(gen_tr)
        next(gen_val)
        return gen_tr, gen_val

    def on_train_start(self):
        super().on_train_start()
        if self._odd_batch is not None:
            self.print_to_log_file(f"batch size {self._odd_batch} -> {self.batch_size}: a batch holds whole pairs")
        self.print_to_log_file(f"co-segmentation: CoSegNet {self.coseg_depth}, attention {self.coseg_attention}, "
                               f"{self.coseg_optimizer} (lr {self.initial_lr:g}, weight decay {self.weight_decay:g}), "
                               f"{self.batch_size // 2} pairs per batch from {CLUSTERS_FILE}")

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self):
        if self.coseg_optimizer == "sgd":
            return super().configure_optimizers()  # nnU-Net's SGD + poly with our lr/weight decay
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
        # exponent 0: a constant rate that nnU-Net can still step per epoch
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.0)
