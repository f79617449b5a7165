"""Scene recipes: an airport apron, a parking lot, a highway, an oil depot, a harbor, a residential area,
farmland and forest, each painted at a density ("one" object, a "few", or "many": more than 10 of one class),
then given the camera's blur and noise."""

from __future__ import annotations

import math

import cv2
import numpy as np

from synthetic.drawing import box, fill_textured, fixed, line, polygon_mask, rotate
from synthetic.landcover import landcover_scene
from synthetic.painters import (Scene, edge_band, new_scene, paint_building, paint_pier, paint_plane, paint_pool, paint_road,
                                paint_ship, paint_tank, paint_trees, paint_vehicle, side_point)

# Scene-class folders and the painter of each (AID/UCM-style folder names; the reader makes them readable).
SCENE_CLASSES = ("airport", "denseresidential", "farmland", "forest", "harbor", "parkinglot")


def count_for(rng: np.random.Generator, density: str, few: tuple[int, int], many: tuple[int, int]) -> int:
    """Objects of the main class: exactly 1, a few, or more than 10 (B2C's "many")."""
    lo, hi = {"one": (1, 1), "few": few, "many": many}[density]
    return int(rng.integers(lo, hi + 1))


def compose_airport(rng: np.random.Generator, size: int, density: str) -> Scene:
    """Planes parked on a concrete apron with taxi lines; a grass strip on one edge; service cars."""
    scene = new_scene("airport", rng, size, "concrete")
    side = int(rng.integers(4))
    grass = polygon_mask(size, edge_band(size, side, size * rng.uniform(0.12, 0.26)))
    fill_textured(scene.image, rng, grass, "grass")
    scene.facts["grass"] = True
    for _ in range(int(rng.integers(1, 4))):
        p = rng.uniform(0, size, 2)
        a = (side % 2) * math.pi / 2 + rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.02)  # taxi lines follow the apron
        d = np.array([math.cos(a), math.sin(a)]) * size * 1.5
        line(scene.image, p - d, p + d, (206, 176, 64), max(1, size // 192))
    scene.facts["lines"] = True
    apron = grass == 0
    n = count_for(rng, density, (2, 5), (6, 9))
    for _ in range(n):
        for _ in range(60):
            length = size * rng.uniform(0.16, 0.26) * (0.8 if density == "many" else 1.0)
            cx, cy = rng.uniform(0, size, 2)
            if scene.fits(cx, cy, 0.5 * length, apron, gap=3, reach=0.71 * length):
                paint_plane(scene, rng, cx, cy, rng.uniform(0, 2 * math.pi), length)
                break
    if density != "one":
        add_random_vehicles(scene, rng, int(rng.integers(0, 4)), apron, large_share=0.3)
    return scene


def add_random_vehicles(scene: Scene, rng: np.random.Generator, n: int, allowed: np.ndarray, large_share: float = 0.0) -> None:
    size = scene.size
    for _ in range(n):
        large = rng.random() < large_share
        length = size * (rng.uniform(0.11, 0.14) if large else rng.uniform(0.045, 0.06))
        for _ in range(40):
            cx, cy = rng.uniform(0, size, 2)
            if scene.fits(cx, cy, 0.5 * length, allowed, gap=2, reach=0.56 * length):
                paint_vehicle(scene, rng, cx, cy, rng.uniform(0, 2 * math.pi), length, large)
                break


def parking_rows(depth_total: float, depth: float, aisle: float) -> list[tuple[float, float]]:
    """(v of the row, facing) of back-to-back row pairs separated by aisles."""
    rows, v = [], depth * 0.2
    while v + 2 * depth <= depth_total:
        rows += [(v + depth / 2, math.pi / 2), (v + 1.5 * depth, -math.pi / 2)]
        v += 2 * depth + aisle
    if v + depth <= depth_total:
        rows.append((v + depth / 2, math.pi / 2))
    return rows


def compose_parking(rng: np.random.Generator, size: int, density: str) -> Scene:
    """An asphalt lot with painted stalls in back-to-back rows, cars parked nose-in, trucks in a bay."""
    scene = new_scene("parking", rng, size, str(rng.choice(["grass", "meadow"])))
    scene.facts["grass"] = True
    left, top, right, bottom = rng.uniform(0.04, 0.14, 4) * size
    x0, y0, x1, y1 = left, top, size - right, size - bottom
    lot = polygon_mask(size, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    fill_textured(scene.image, rng, lot, "asphalt")
    transposed = bool(rng.random() < 0.5)  # rows run along y instead of x
    U, V = (y1 - y0, x1 - x0) if transposed else (x1 - x0, y1 - y0)

    def to_image(u: float, v: float) -> tuple[float, float]:
        return (x0 + v, y0 + u) if transposed else (x0 + u, y0 + v)

    car = size * rng.uniform(0.045, 0.058)
    truck = car * rng.uniform(2.3, 2.7)
    has_trucks = density != "one" and V > 4 * truck and rng.random() < 0.6
    car_depth = V - 1.3 * truck if has_trucks else V
    stall = car * rng.uniform(0.68, 0.78)
    rows = parking_rows(car_depth, car * 1.25, car * 1.3)
    us = np.arange(stall * 0.8, U - stall * 0.8, stall)
    for v, _ in rows:
        for u in np.append(us - stall / 2, us[-1] + stall / 2):
            line(scene.image, to_image(u, v - car * 0.6), to_image(u, v + car * 0.6), (222, 222, 214))
    scene.facts["lines"] = True
    slots = [(u, v, facing) for v, facing in rows for u in us]
    n = min(count_for(rng, density, (3, 9), (11, 40)), len(slots))
    for i in sorted(rng.choice(len(slots), n, replace=False)):
        u, v, facing = slots[i]
        cx, cy = to_image(u + rng.normal(0, 0.04 * car), v + rng.normal(0, 0.04 * car))
        turn = facing + (math.pi if rng.random() < 0.15 else 0.0) + rng.normal(0, 0.04)
        paint_vehicle(scene, rng, cx, cy, turn - math.pi / 2 if transposed else turn, car)
    scene.facts["free_slots"] = len(slots) - n
    if has_trucks:
        bay = truck * 0.42
        for u in np.arange(bay, U - bay, bay * 1.5)[: int(rng.integers(1, 4))]:
            cx, cy = to_image(u, V - 0.62 * truck)
            paint_vehicle(scene, rng, cx, cy, (0.0 if transposed else math.pi / 2) + rng.normal(0, 0.03), truck, large=True)
    return scene


def compose_highway(rng: np.random.Generator, size: int, density: str) -> Scene:
    """A multi-lane road across fields or bare soil with cars and trucks in their lanes."""
    scene = new_scene("highway", rng, size, str(rng.choice(["grass", "soil", "meadow"])))
    scene.facts["grass"] = scene.ground != "soil"
    angle = rng.uniform(0, math.pi)
    centre = size / 2 + rng.normal(0, 0.08 * size, 2)
    lanes = 2 if density == "one" else int(rng.integers(3, 5))
    lane_w = size * rng.uniform(0.045, 0.055)
    paint_road(scene, rng, centre, angle, lanes * lane_w, lanes)
    scene.facts["lanes"] = lanes
    car = lane_w * rng.uniform(1.0, 1.15)
    step = car * 1.6
    direction = np.array([math.cos(angle), math.sin(angle)])
    normal = np.array([-math.sin(angle), math.cos(angle)])
    free: dict[tuple[int, int], np.ndarray] = {}
    for lane in range(lanes):
        for j in range(int(-size / step), int(size / step) + 1):
            free[(lane, j)] = centre + normal * (lane + 0.5 - lanes / 2) * lane_w + direction * j * step
    heading = lambda lane: angle if lane >= lanes / 2 else angle + math.pi  # noqa: E731 - right-hand traffic
    inside = lambda p, r: r + 1 <= p[0] <= size - r - 1 and r + 1 <= p[1] <= size - r - 1  # noqa: E731
    n_large = 0 if density == "one" else int(rng.integers(0, 3 if density == "many" else 4))
    n_small = count_for(rng, density, (2, 7), (11, 24))
    keys = list(free)
    for _ in range(n_large):
        for i in rng.permutation(len(keys)):
            lane, j = keys[i]
            trio = [(lane, j - 1), (lane, j), (lane, j + 1)]
            if all(k in free for k in trio) and inside(free[(lane, j)], 1.4 * step):
                p = free[(lane, j)]
                paint_vehicle(scene, rng, *p, heading(lane), step * 2.6, large=True)
                for k in trio:
                    del free[k]
                break
    spots = [k for k in free if inside(free[k], 0.6 * car)]
    for i in sorted(rng.choice(len(spots), min(n_small, len(spots)), replace=False)):
        lane, _ = spots[i]
        p = free[spots[i]] + direction * rng.normal(0, 0.1 * car)
        paint_vehicle(scene, rng, *p, heading(lane) + rng.normal(0, 0.02), car)
    return scene


def compose_tanks(rng: np.random.Generator, size: int, density: str) -> Scene:
    """An oil depot: a grid of round tanks on a concrete pad over soil or sand, a road, trucks."""
    scene = new_scene("tanks", rng, size, str(rng.choice(["soil", "sand"])))
    k = count_for(rng, density, (2, 8), (11, 20))
    cols = int(np.clip(math.ceil(math.sqrt(k * rng.uniform(0.8, 1.6))), 1, k))
    rows = math.ceil(k / cols)
    r = size * (rng.uniform(0.06, 0.09) if k <= 4 else rng.uniform(0.03, 0.05))
    spacing = 2 * r * rng.uniform(1.25, 1.5)
    scale = min(1.0, 0.72 * size / (max(cols, rows) * spacing))
    r, spacing = r * scale, spacing * scale
    w, h = (cols - 1) * spacing + 2 * r, (rows - 1) * spacing + 2 * r
    gx = rng.uniform(0.1 * size, 0.9 * size - w)
    gy = rng.uniform(0.06 * size, max(0.06 * size, 0.62 * size - h))
    pad = [(gx - 0.4 * r, gy - 0.4 * r), (gx + w + 0.4 * r, gy - 0.4 * r), (gx + w + 0.4 * r, gy + h + 0.4 * r), (gx - 0.4 * r, gy + h + 0.4 * r)]
    fill_textured(scene.image, rng, polygon_mask(size, pad), "concrete")
    cv2.polylines(scene.image, fixed(pad), True, (110, 100, 86), max(1, size // 128), cv2.LINE_AA, 4)
    for i in range(k):
        row, col = divmod(i, cols)
        paint_tank(scene, rng, gx + r + col * spacing, gy + r + row * spacing, r * rng.uniform(0.94, 1.0))
    road_y = gy + h + 0.4 * r + size * 0.08
    if road_y < size * 0.92:
        road = paint_road(scene, rng, (size / 2, road_y), rng.normal(0, 0.03), size * 0.07)
        if density != "one":
            add_random_vehicles(scene, rng, int(rng.integers(0, 3)), road, large_share=1.0)
    return scene


def compose_harbor(rng: np.random.Generator, size: int, density: str) -> Scene:
    """A quay along one edge of the sea, piers into the water, ships moored and under way, warehouses."""
    scene = new_scene("harbor", rng, size, "concrete")
    side, depth = int(rng.integers(4)), size * rng.uniform(0.45, 0.6)
    water = polygon_mask(size, edge_band(size, side, depth))
    fill_textured(scene.image, rng, water, "water")
    line(scene.image, side_point(side, size, -1, depth), side_point(side, size, size + 1, depth), (120, 116, 108), max(1, size // 128))
    scene.facts["water"] = True
    piers = []
    if density != "one":
        for u in np.sort(rng.uniform(0.15, 0.85, int(rng.integers(1, 4)))) * size:
            length, width = size * rng.uniform(0.18, 0.3), size * rng.uniform(0.035, 0.05)
            p0, p1 = side_point(side, size, u, depth + 1), side_point(side, size, u, depth - length)
            if all(np.linalg.norm(p0 - q0) > 0.14 * size for q0, _, _ in piers):
                piers.append((p0, p1, width))
                paint_pier(scene, rng, p0, p1, width)
    sea = water.copy()
    for p0, p1, width in piers:
        sea[polygon_mask(size, rotate(box(np.linalg.norm(p1 - p0) + 4, width + 4), *((p0 + p1) / 2), math.atan2(*(p1 - p0)[::-1]))) > 0] = 0
    n = count_for(rng, density, (2, 6), (8, 12))
    moving = 0
    for i in range(n):
        length = size * (rng.uniform(0.07, 0.1) if density == "many" else rng.uniform(0.1, 0.2))
        for _ in range(60):
            if piers and i % 2 == 0:  # moored alongside a pier
                p0, p1, width = piers[int(rng.integers(len(piers)))]
                d = (p1 - p0) / np.linalg.norm(p1 - p0)
                t = rng.uniform(0.35, 0.75) * np.linalg.norm(p1 - p0)
                across = np.array([-d[1], d[0]]) * rng.choice([-1, 1])
                c = p0 + d * t + across * (width / 2 + length * 0.12 + 1.5)
                angle, moves = math.atan2(d[1], d[0]) + rng.choice([0, math.pi]), False
            else:
                c, angle, moves = rng.uniform(0, size, 2), rng.uniform(0, 2 * math.pi), bool(rng.random() < 0.6)
            probes = rotate([(-0.45 * length, 0), (0, 0), (0.45 * length, 0)], *c, angle)
            if scene.fits(*c, 0.5 * length, sea, gap=2, probes=probes, reach=0.52 * length):
                paint_ship(scene, rng, *c, angle, length, moves)
                moving += moves
                break
    scene.facts["moving_ships"] = moving
    land = (water == 0).astype(np.uint8)
    for _ in range(int(rng.integers(0, 3))):
        l, w = size * rng.uniform(0.12, 0.2), size * rng.uniform(0.07, 0.1)
        for _ in range(30):
            cx, cy = rng.uniform(0, size, 2)
            if scene.fits(cx, cy, 0.5 * math.hypot(l, w), land, gap=3):
                paint_building(scene, rng, cx, cy, [0.0, math.pi / 2][side % 2] + rng.normal(0, 0.02), l, w)
                break
    return scene


def compose_residential(rng: np.random.Generator, size: int, density: str) -> Scene:
    """Houses in rows along one or two roads, trees, pools in the gardens, cars on the roads."""
    scene = new_scene("residential", rng, size, str(rng.choice(["grass", "meadow"])))
    scene.facts["grass"] = True
    dense = density == "many"
    base = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.05)
    roads, road_mask = [], np.zeros((size, size), np.uint8)
    for k in range(1 + int(rng.random() < 0.5)):
        angle = base + k * math.pi / 2
        centre = size * rng.uniform(0.3, 0.7, 2)
        width = size * rng.uniform(0.06, 0.08)
        road_mask |= paint_road(scene, rng, centre, angle, width)
        roads.append((np.asarray(centre), angle, width))
    off_road = road_mask == 0
    paint_trees(scene, rng, int(size * (0.1 if dense else 0.25)), off_road)
    for centre, angle, width in roads:
        d, nrm = np.array([math.cos(angle), math.sin(angle)]), np.array([-math.sin(angle), math.cos(angle)])
        hl, hw = size * rng.uniform(0.07, 0.1), size * rng.uniform(0.05, 0.07)
        for side in (-1, 1):
            for depth_row in range(2 if dense else 1):
                offset = width / 2 + size * 0.03 + hw / 2 + depth_row * (hw + size * 0.07)
                for t in np.arange(-size, size, hl * rng.uniform(1.25, 1.6)):
                    c = centre + d * t + nrm * side * offset
                    if scene.fits(*c, 0.45 * math.hypot(hl, hw), off_road, gap=1, reach=0.5 * math.hypot(hl, hw)):
                        paint_building(scene, rng, *c, angle, hl, hw)
                        pool = c + nrm * side * (hw / 2 + size * 0.035)
                        if density != "one" and rng.random() < 0.25 and scene.fits(*pool, size * 0.028, off_road):
                            paint_pool(scene, rng, *pool, angle, size * 0.045, size * 0.028)
    n = count_for(rng, density, (2, 7), (4, 10))
    for _ in range(n):
        centre, angle, width = roads[int(rng.integers(len(roads)))]
        lane = rng.choice([-1, 1])
        car = size * rng.uniform(0.045, 0.055)
        for _ in range(40):
            t = rng.uniform(-size, size)
            c = centre + np.array([math.cos(angle), math.sin(angle)]) * t + np.array([-math.sin(angle), math.cos(angle)]) * lane * width / 4
            if scene.fits(*c, 0.5 * car, gap=2, reach=0.56 * car):
                paint_vehicle(scene, rng, *c, angle + (math.pi if lane < 0 else 0.0), car)
                break
    return scene


def compose_farmland(rng: np.random.Generator, size: int, density: str) -> Scene:
    return landcover_scene("farmland", rng, size)


def compose_forest(rng: np.random.Generator, size: int, density: str) -> Scene:
    return landcover_scene("forest", rng, size)


COMPOSERS = {
    "airport": compose_airport, "parking": compose_parking, "harbor": compose_harbor, "tanks": compose_tanks,
    "residential": compose_residential, "highway": compose_highway, "farmland": compose_farmland, "forest": compose_forest,
}
DETECTION_KINDS = ("airport", "parking", "harbor", "tanks", "residential", "highway")
MANY_KINDS = ("parking", "highway", "tanks")  # the recipes that reliably reach more than 10 of one class
CAPTION_KINDS = ("airport", "parking", "harbor", "tanks", "residential", "highway", "farmland", "forest")
SCENE_KINDS = {"airport": "airport", "denseresidential": "residential", "farmland": "farmland", "forest": "forest",
               "harbor": "harbor", "parkinglot": "parking"}


def finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera look: a slight blur and sensor noise over the painted scene."""
    img = cv2.GaussianBlur(image, (3, 3), 0.6).astype(np.float32)
    img += rng.standard_normal(img.shape[:2], dtype=np.float32)[..., None] * np.float32(1.8)
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def compose(kind: str, rng: np.random.Generator, size: int, density: str) -> tuple[Scene, np.ndarray]:
    """A finished scene of recipe ``kind``: (what was painted, the RGB image)."""
    scene = COMPOSERS[kind](rng, size, density)
    return scene, finish(scene.image, rng)
