"""``ulseg segment``: a CT volume and RECIST marks in, lesion masks and RECIST 1.1 measurements out (issue 15).

* :mod:`.volume_io` reads NIfTI/NRRD/MHA files and DICOM series with SimpleITK and writes
  label volumes in the input's geometry;
* :mod:`.marks` reads marks (RECIST endpoints or boxes, voxel or world coordinates);
* :mod:`.predict` loads a trained nnU-Net model and segments one crop;
* :mod:`.lesion` cuts a lesion's crops exactly as the converter did, predicts and pastes back
  (key slice, and slice by slice outwards with ``--propagate``);
* :mod:`.measurements` measures each mask (ULS23 axes, area, volume, QA flag);
* :mod:`.cli` is the command.

Floor 5 (like ``workflow``): it may import every floor below.
"""
