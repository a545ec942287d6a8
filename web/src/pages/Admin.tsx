import { useTranslation } from "react-i18next";
import type { S } from "../api/client";

/** Administration screens (admins only). */
export function Admin({ me }: { me: S["User"] }) {
  const { t } = useTranslation();
  return (
    <section className="page">
      <h2>{t("admin.title")}</h2>
      <p className="muted">{me.display_name}</p>
    </section>
  );
}
