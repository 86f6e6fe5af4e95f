"""MediaPipe FaceMesh (0.10.21, its models ship in the wheel) on whole photos, as the 15 Kaggle keypoints.

Runs in its own venv (benchmarks/peers/setup_photo_peers.sh); benchmarks/photo_peers.py drives it:

    ~/.cache/kpjax/peers/mediapipe/bin/python benchmarks/peers/photo_mediapipe.py IMAGES_LIST OUT_JSON

The static-image FaceMesh (BlazeFace short-range detector, then the attention mesh
with ``refine_landmarks``, which fits the eye and lip contours better) gives 478
points. FaceMesh reports no detection score, so ``score`` is null, and ``box``
is the mesh's bounding box.
"""

from __future__ import annotations

import cv2
import mediapipe as mp
import numpy as np

import photo_protocol

MAX_FACES = 10
# Mesh vertices averaged into each Kaggle keypoint. MediaPipe's left/right are the subject's, like Kaggle's
# (its FACEMESH_LEFT_EYE holds 263 and 362, on the image's right); checked on overlays of Helen photos.
MESH_FROM = {
    # The mean of the six contour points of dlib's eye-aspect-ratio (outer, two upper, inner, two lower),
    # as kpjax derives the eye centre from iBUG's six: on 300 Helen faces 1.8-2.0 % of the outer-corner
    # distance from that reference, against 3.4-3.6 % for the iris centres (473, 468), which sit higher.
    "left_eye_center": [263, 387, 385, 362, 380, 373],
    "right_eye_center": [33, 160, 158, 133, 153, 144],
    "left_eye_inner_corner": [362],
    "left_eye_outer_corner": [263],
    "right_eye_inner_corner": [133],
    "right_eye_outer_corner": [33],
    # The mesh draws each eyebrow as an upper (300..336, 70..107) and a lower (276..285, 46..55) contour
    # whose ends do not meet; an end of the eyebrow is the middle of the two contours' ends.
    "left_eyebrow_inner_end": [336, 285],
    "left_eyebrow_outer_end": [300, 276],
    "right_eyebrow_inner_end": [107, 55],
    "right_eyebrow_outer_end": [70, 46],
    # 4, the lowest point of the nose ridge in the image, like iBUG's 30; the mesh's own "nose tip" 1 is the
    # most protruding vertex in 3D, which projects 6.6 % of the outer-corner distance below it.
    "nose_tip": [4],
    "mouth_left_corner": [291],
    "mouth_right_corner": [61],
    "mouth_center_top_lip": [0],  # the upper lip's outer edge, as iBUG's 51
    "mouth_center_bottom_lip": [17],  # the lower lip's outer edge, as iBUG's 57
}
face_mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=MAX_FACES, refine_landmarks=True)


def decode(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("OpenCV cannot decode it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def find_faces(image: np.ndarray) -> list[photo_protocol.PeerFace]:
    height, width = image.shape[:2]
    found = face_mesh.process(image).multi_face_landmarks or []
    faces = []
    for landmarks in found:
        # Normalised continuous coordinates (pixel i spans [i, i + 1)) to pixel indices.
        mesh = np.array([(p.x * width - 0.5, p.y * height - 0.5) for p in landmarks.landmark])
        low, high = mesh.min(axis=0), mesh.max(axis=0)
        keypoints = [mesh[MESH_FROM[name]].mean(axis=0) for name in photo_protocol.KAGGLE_NAMES]
        faces.append(photo_protocol.PeerFace((*low, *(high - low + 1)), None, keypoints))
    return faces


if __name__ == "__main__":
    photo_protocol.run(__doc__, decode, find_faces)
