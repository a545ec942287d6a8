// A BPMN diagram drawn by bpmn-js (NavigatedViewer: pan and zoom), with the elements where an
// instance waits marked `fd-active` and those with an open incident `fd-incident`.
import { useEffect, useRef, useState } from "react";
import { useTranslation } from "react-i18next";
import type NavigatedViewer from "bpmn-js/lib/NavigatedViewer";

/** The parts of diagram-js's canvas and element registry used here. */
interface Canvas {
  zoom(level: "fit-viewport"): number;
  addMarker(element: string, marker: string): void;
  removeMarker(element: string, marker: string): void;
}
interface ElementRegistry {
  get(id: string): unknown;
}

const NONE: string[] = [];

export function BpmnDiagram({ xml, active = NONE, incidents = NONE }: { xml: string; active?: string[]; incidents?: string[] }) {
  const { t } = useTranslation();
  const box = useRef<HTMLDivElement>(null);
  const [viewer, setViewer] = useState<NavigatedViewer | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    let gone = false;
    let v: NavigatedViewer | null = null;
    void (async () => {
      try {
        const { NavigatedViewer } = await import("./bpmn");
        if (gone || !box.current) return;
        v = new NavigatedViewer({ container: box.current });
        await v.importXML(xml);
        if (gone) return;
        v.get<Canvas>("canvas").zoom("fit-viewport");
        setError(null);
        setViewer(v);
      } catch (e) {
        if (!gone) setError(e instanceof Error ? e.message : String(e));
      }
    })();
    return () => {
      gone = true;
      setViewer(null);
      v?.destroy();
    };
  }, [xml]);

  // Markers follow the instance as it moves, without drawing the diagram again.
  const activeKey = active.join("\n");
  const incidentKey = incidents.join("\n");
  useEffect(() => {
    if (!viewer) return;
    const canvas = viewer.get<Canvas>("canvas");
    const registry = viewer.get<ElementRegistry>("elementRegistry");
    const marks: [string, string][] = [
      ...activeKey.split("\n").map((id): [string, string] => [id, "fd-active"]),
      ...incidentKey.split("\n").map((id): [string, string] => [id, "fd-incident"]),
    ].filter(([id]) => id !== "" && registry.get(id));
    for (const [id, m] of marks) canvas.addMarker(id, m);
    return () => {
      // The viewer may be gone already (a new diagram); its elements with it.
      for (const [id, m] of marks) if (registry.get(id)) canvas.removeMarker(id, m);
    };
  }, [viewer, activeKey, incidentKey]);

  return (
    <div className="bpmn">
      <div ref={box} className="bpmn-canvas" data-testid="bpmn-canvas" data-ready={viewer ? "true" : "false"} />
      {!viewer && !error && <p className="muted small">{t("admin.processes.diagramLoading")}</p>}
      {error && (
        <p className="error" role="alert" data-testid="bpmn-error">
          {t("admin.processes.diagramFailed", { message: error })}
        </p>
      )}
    </div>
  );
}
