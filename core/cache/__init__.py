"""The H5 slice cache: volumes and masks converted once into one HDF5 file, read slice by slice.

- ``medkit.cache.build``: ``build_cache`` (``medkit cache build``)
- ``medkit.cache.store``: ``SliceCache``, the lazy, fork- and pickle-safe reader
- ``medkit.cache.sampler``: paper 002's limited-RAM sampler (``LimitedRamSampler``, ``ResidentSliceDataset``)
- ``medkit.cache.selection``: which slices a plugin trains on (all, labelled, N largest, 2.5D stacks)
- ``medkit.cache.inspect``: ``cache_info`` and ``verify_cache`` (``medkit cache info|verify``)
"""
