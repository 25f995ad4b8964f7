"""Send one image to a careg-edge Triton server with plain tritonclient.

Works against `careg-edge serve` (PyTriton) and against the exported repository in
the stock Triton container: both serve model "careg" with the same tensors.

    pip install 'tritonclient[http]'
    python examples/triton_client.py http://127.0.0.1:8000 flange part.png

careg_edge.serve.client.ServeClient wraps the same calls (and `careg-edge run
--server URL --product NAME` sends a camera, video or folder).
"""
import sys

import numpy as np
import tritonclient.http as http
from tritonclient.utils import InferenceServerException


def main(url: str, product: str, image_path: str) -> int:
    client = http.InferenceServerClient(url.split("://")[-1])
    with open(image_path, "rb") as f:
        image = np.array([[f.read()]], dtype=object)          # [batch 1, 1] encoded bytes
    name = np.array([[product.encode()]], dtype=object)
    inputs = [http.InferInput("image", [1, 1], "BYTES"), http.InferInput("product", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(image, binary_data=True)
    inputs[1].set_data_from_numpy(name, binary_data=True)
    try:
        res = client.infer("careg", inputs)
    except InferenceServerException as e:   # wrong shape/dtype, or a repository model refused it
        print(f"refused: {e.message()}", file=sys.stderr)
        return 2
    verdict = res.as_numpy("verdict")[0][0].decode()
    if verdict == "error":                  # `careg-edge serve` answers a bad item this way
        print(f"refused: {res.as_numpy('error')[0][0].decode()}", file=sys.stderr)
        return 2
    score, threshold = float(res.as_numpy("score")[0][0]), float(res.as_numpy("threshold")[0][0])
    heatmap = res.as_numpy("heatmap")[0]    # 32 x 32, score units
    print(f"{verdict}: score {score:.4g} (threshold {threshold:.4g}); "
          f"{res.as_numpy('reason')[0][0].decode()}; hottest heatmap cell {heatmap.max():.4g}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
