import { useQuery, useQueryClient } from "@tanstack/react-query";
import { Navigate, Route, Routes } from "react-router-dom";
import { api, setCsrf, type S } from "./api/client";
import { Login } from "./pages/Login";
import { Desk } from "./pages/Desk";
import i18n from "./i18n";

/** The signed-in user, or `null`. */
export function useMe() {
  return useQuery({
    queryKey: ["me"],
    queryFn: async (): Promise<S["Me"] | null> => {
      const r = await api.GET("/api/v1/auth/me");
      if (r.response.status === 401) return null;
      if (!r.data) throw new Error(r.response.statusText);
      setCsrf(r.data.csrf_token);
      return r.data;
    },
    staleTime: Infinity,
  });
}

export function App() {
  const me = useMe();
  const qc = useQueryClient();
  if (me.isLoading) return <div className="splash">Ferrydesk…</div>;
  const user = me.data?.user;
  if (user && i18n.language !== user.locale && !localStorage.getItem("ferrydesk:lang")) void i18n.changeLanguage(user.locale);
  return (
    <Routes>
      <Route
        path="/login"
        element={user ? <Navigate to="/" replace /> : <Login onLoggedIn={(m) => qc.setQueryData(["me"], m)} />}
      />
      <Route path="/*" element={user ? <Desk me={user} /> : <Navigate to="/login" replace />} />
    </Routes>
  );
}
