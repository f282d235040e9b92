"""The GPU half of the runtime: TensorRT engines and the CUDA they run on, apart from the CPU path.

    profiles.py      optimization profiles from a bundle's static shapes (standard library only)
    engine_store.py  engines stored in a bundle: cache keys, lookup, the machine's target
    cuda.py          the little of the CUDA runtime the backend needs, through cuda-python
    head_loop.py     the head loop of one AR step on the device, replayed as a checked CUDA graph
    backend.py       TensorRTComponents: the sampler components on a bundle's engines

TensorRT and cuda-python are imported lazily, where a GPU path is asked for.
"""
