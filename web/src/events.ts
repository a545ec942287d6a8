// Live updates: the operator WebSocket invalidates the affected queries.
import { useEffect, useRef } from "react";
import { useQueryClient } from "@tanstack/react-query";
import i18n from "./i18n";
import type { S } from "./api/client";

type Event = S["EventBody"] | { type: "hello" } | { type: "resync" };

export function useEvents(muted: boolean) {
  const qc = useQueryClient();
  const mutedRef = useRef(muted);
  useEffect(() => {
    mutedRef.current = muted;
  }, [muted]);

  useEffect(() => {
    let ws: WebSocket | null = null;
    let retry = 500;
    let stopped = false;
    const connect = () => {
      ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`);
      ws.onopen = () => {
        retry = 500;
        void qc.invalidateQueries();
      };
      ws.onmessage = (m) => {
        const ev = JSON.parse(m.data) as Event;
        switch (ev.type) {
          case "chat_offered":
            void qc.invalidateQueries({ queryKey: ["inbox"] });
            if (!mutedRef.current) notify(ev.chat.contact_name);
            break;
          case "message_created":
            void qc.invalidateQueries({ queryKey: ["chat", ev.message.chat_id] });
            void qc.invalidateQueries({ queryKey: ["inbox"] });
            break;
          case "message_updated":
            void qc.invalidateQueries({ queryKey: ["chat", ev.message.chat_id] });
            break;
          case "chat_withdrawn":
          case "chat_finished":
            void qc.invalidateQueries({ queryKey: ["inbox"] });
            void qc.invalidateQueries({ queryKey: ["chat", ev.chat_id] });
            break;
          case "chat_assigned":
          case "chat_updated":
            void qc.invalidateQueries({ queryKey: ["inbox"] });
            void qc.invalidateQueries({ queryKey: ["chat", ev.chat.id] });
            break;
          case "status_changed":
            void qc.invalidateQueries({ queryKey: ["inbox"] });
            void qc.invalidateQueries({ queryKey: ["me"] });
            break;
          case "resync":
            void qc.invalidateQueries();
            break;
        }
      };
      ws.onclose = () => {
        if (stopped) return;
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 15000);
      };
    };
    connect();
    return () => {
      stopped = true;
      ws?.close();
    };
  }, [qc]);
}

function notify(name: string) {
  try {
    const ctx = new AudioContext();
    const o = ctx.createOscillator();
    const g = ctx.createGain();
    o.frequency.value = 880;
    g.gain.value = 0.05;
    o.connect(g).connect(ctx.destination);
    o.start();
    o.stop(ctx.currentTime + 0.15);
  } catch {
    // No audio available (headless, autoplay policy): the counter still shows the chat.
  }
  if ("Notification" in window && Notification.permission === "granted" && document.hidden) {
    new Notification(i18n.t("notify.newChat", { name }));
  }
}
