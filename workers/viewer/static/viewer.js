/* atc-wsi viewer: the slide with heatmap overlays, markers and annotations (OpenSeadragon). */
"use strict";

(function () {
  const state = { viewer: null, layers: null, items: {}, visible: {}, opacity: 0.7,
                  tilesLoaded: {}, markerEls: {}, ready: false, error: null };
  window.atcViewer = state;

  const $ = (id) => document.getElementById(id);

  // API token: opened as …/viewer/#token=T (the fragment never reaches the server or its logs);
  // kept for this tab only and sent as a Bearer header with every data and tile request.
  const fromHash = new URLSearchParams(window.location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("atcToken", fromHash);
    history.replaceState(null, "", window.location.pathname + window.location.search);
  }
  const token = sessionStorage.getItem("atcToken");
  const authHeaders = token ? { Authorization: "Bearer " + token } : {};
  const status = (text, isError) => {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
    if (isError) { state.error = text; }
  };

  async function getJSON(url) {
    const r = await fetch(url, { headers: authHeaders });
    if (!r.ok) { throw new Error(url + ": HTTP " + r.status + " " + (await r.text())); }
    return r.json();
  }

  function checkbox(parent, label, checked, onChange, swatch) {
    const el = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = checked;
    box.addEventListener("change", () => onChange(box.checked));
    el.appendChild(box);
    if (swatch) {
      const s = document.createElement("span");
      s.className = "swatch";
      s.style.background = swatch;
      el.appendChild(s);
    }
    el.appendChild(document.createTextNode(" " + label));
    parent.appendChild(el);
    return box;
  }

  function applyOpacity() {
    for (const [name, item] of Object.entries(state.items)) {
      item.setOpacity(state.visible[name] ? state.opacity : 0);
    }
    drawLegend();
  }

  function drawLegend() {
    const legend = $("legend");
    legend.innerHTML = "";
    for (const ov of state.layers.overlays) {
      if (!state.visible[ov.name]) { continue; }
      const block = document.createElement("div");
      block.className = "legend-block";
      block.appendChild(document.createTextNode(ov.label + (ov.unit ? " (" + ov.unit + ")" : "")));
      if (ov.legend.length > 1) {
        const bar = document.createElement("div");
        bar.className = "legend-bar";
        bar.style.background = "linear-gradient(to right, " + ov.legend.map((x) => x[1]).join(", ") + ")";
        const ticks = document.createElement("div");
        ticks.className = "legend-ticks";
        for (const x of [ov.legend[0], ov.legend[ov.legend.length - 1]]) {
          const t = document.createElement("span");
          t.textContent = x[0];
          ticks.appendChild(t);
        }
        block.appendChild(bar);
        block.appendChild(ticks);
      } else if (ov.legend.length === 1) {
        const s = document.createElement("span");
        s.className = "swatch";
        s.style.background = ov.legend[0][1];
        block.prepend(s);
      }
      legend.appendChild(block);
    }
  }

  function addOverlays() {
    const toggles = $("overlay-toggles");
    state.layers.overlays.forEach((ov, i) => {
      state.visible[ov.name] = i === 0;
      state.tilesLoaded[ov.name] = 0;
      checkbox(toggles, ov.label, i === 0, (on) => {
        state.visible[ov.name] = on;
        applyOpacity();
      }).dataset.layer = ov.name;
      state.viewer.addTiledImage({
        tileSource: ov.dzi,
        opacity: i === 0 ? state.opacity : 0,
        success: (e) => { e.item.atcName = ov.name; state.items[ov.name] = e.item; },
        error: (e) => status("overlay " + ov.name + " failed: " + e.message, true),
      });
    });
    drawLegend();
  }

  const SVG_NS = "http://www.w3.org/2000/svg";

  function ringPath(ring) {
    return "M" + ring.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join("L") + "Z";
  }

  function geometryPath(g) {
    const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
    return polys.map((rings) => rings.map(ringPath).join("")).join("");
  }

  // "Mitosis: Tripolar" -> " marker-mitosis marker-mitosis-tripolar": a class for the family
  // (QuPath's derived-class parent) and one for the subtype.
  function markerClasses(name) {
    const slug = (s) => s.toLowerCase().replace(/[^a-z]+/g, "-").replace(/^-|-$/g, "");
    const parts = name.split(":");
    let out = " marker-" + slug(parts[0]);
    if (parts.length > 1) { out += " marker-" + slug(name); }
    return out;
  }

  function addMarkers(collection) {
    const L = state.layers;
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + L.width + " " + L.height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.style.pointerEvents = "none";
    svg.id = "annotation-svg";
    const groups = {};
    const toggles = $("marker-toggles");
    for (const f of collection.features) {
      const name = f.properties.classification.name;
      const color = collection.classes[name].color;
      if (!(name in state.markerEls)) {
        state.markerEls[name] = [];
        const defaultOn = name !== "Macrophage";
        checkbox(toggles, name + " (" + collection.classes[name].count + ")", defaultOn, (on) => {
          for (const el of state.markerEls[name]) { el.classList.toggle("atc-hidden", !on); }
        }, color).dataset.marker = name;
        state.markerEls[name].defaultOn = defaultOn;
      }
      if (f.geometry.type === "Point") {
        const el = document.createElement("div");
        el.className = "marker" + (name === "Macrophage" ? " small" : "") + markerClasses(name);
        el.style.background = color;
        el.title = name;
        const [x, y] = f.geometry.coordinates;
        state.viewer.addOverlay({ element: el, location: new OpenSeadragon.Point(x / L.width, y / L.width),
                                  placement: OpenSeadragon.Placement.CENTER, checkResize: false });
        state.markerEls[name].push(el);
      } else {
        if (!groups[name]) {
          groups[name] = document.createElementNS(SVG_NS, "g");
          groups[name].setAttribute("data-class", name);
          svg.appendChild(groups[name]);
          state.markerEls[name].push(groups[name]);
        }
        const path = document.createElementNS(SVG_NS, "path");
        path.setAttribute("d", geometryPath(f.geometry));
        path.setAttribute("fill", "none");
        path.setAttribute("stroke", color);
        path.setAttribute("stroke-width", "3");
        path.setAttribute("vector-effect", "non-scaling-stroke");
        if (/hotspot|hpf/i.test(name)) { path.setAttribute("stroke-dasharray", "8 5"); }
        groups[name].appendChild(path);
      }
    }
    state.viewer.addOverlay({ element: svg, location: new OpenSeadragon.Rect(0, 0, 1, L.height / L.width) });
    for (const [name, els] of Object.entries(state.markerEls)) {
      for (const el of els) { el.classList.toggle("atc-hidden", !els.defaultOn); }
    }
  }

  // Figures the scope verdict withholds (e.g. no mitoses counted on a slide with no tumour):
  // said in words where their markers would be, so their absence does not read as "none found".
  function addNotAssessed(items) {
    for (const item of items || []) {
      const p = document.createElement("p");
      p.className = "note not-assessed";
      p.dataset.section = item.section;
      p.textContent = item.text;
      $("marker-toggles").appendChild(p);
    }
  }

  function addReportLink() {
    const a = document.createElement("a");
    a.href = "report.html";
    a.target = "_blank";
    a.textContent = "Open the report";
    if (token) {  // a new tab cannot send the header: fetch the page and open it as a blob
      a.addEventListener("click", async (e) => {
        e.preventDefault();
        const r = await fetch("report.html", { headers: authHeaders });
        const url = URL.createObjectURL(new Blob([await r.text()], { type: "text/html" }));
        window.open(url, "_blank");
      });
    }
    $("links").appendChild(a);
  }

  async function main() {
    if (typeof OpenSeadragon === "undefined") {
      status("OpenSeadragon is missing: run `make viewer-assets` on the server.", true);
      return;
    }
    const L = await getJSON("layers.json");
    state.layers = L;
    document.title = L.title + " · atc-wsi viewer";
    $("title").textContent = L.title;
    if (L.report_html) { addReportLink(); }
    addNotAssessed(L.not_assessed);
    state.viewer = OpenSeadragon({
      id: "viewer", prefixUrl: "static/openseadragon/images/", tileSources: L.slide.dzi,
      showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", maxZoomPixelRatio: 4,
      // The canvas drawer composites non-premultiplied PNG alpha correctly (WebGL brightens it).
      drawer: "canvas",
      gestureSettingsMouse: { clickToZoom: false },
      loadTilesWithAjax: Boolean(token), ajaxHeaders: authHeaders,
    });
    state.viewer.addHandler("tile-loaded", (e) => {
      const name = e.tiledImage.atcName;
      if (name) { state.tilesLoaded[name] = (state.tilesLoaded[name] || 0) + 1; }
    });
    $("opacity").addEventListener("input", (e) => {
      state.opacity = Number(e.target.value) / 100;
      $("opacity-value").textContent = e.target.value + "%";
      applyOpacity();
    });
    state.viewer.addOnceHandler("open", async () => {
      addOverlays();
      try {
        addMarkers(await getJSON(L.markers));
        state.ready = true;
        status(L.slide_error ? "Ready, without the slide: " + L.slide_error : "Ready.", Boolean(L.slide_error));
      } catch (err) { status(String(err), true); }
    });
    state.viewer.addHandler("open-failed", (e) => status("slide failed to open: " + e.message, true));
  }

  main().catch((err) => status(String(err), true));
})();
