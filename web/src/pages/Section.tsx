import { useTranslation } from "react-i18next";

/** The chats section: list, record pages, Totals (S25, S26). */
export function Section() {
  const { t } = useTranslation();
  return (
    <section className="page">
      <h2>{t("section.title")}</h2>
    </section>
  );
}
