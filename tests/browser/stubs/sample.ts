// A client written against the chat example's generated stubs: `tsc` must accept it.
import { Api, type Members, type Pushes, type UserMessage } from "../../../examples/chat/web/api.js";

export async function chat(url: string): Promise<string> {
  const api = await Api.connect(url);
  const joined = await api.room.join();
  const code: number = joined.code;
  const said: void = await api.room.message({ name: "alice", content: "hi" });
  api.notify.room.message({ name: "alice", content: "again" });
  api.on("onMessage", (m: UserMessage) => console.log(m.name, m.content));
  api.on("onMembers", (m: Members) => m.members.join(", "));
  api.on("onNewUser", (n) => n.content.toUpperCase());
  const left: Pushes["onLeave"] = { content: "User left: 7" };
  const stale: string[] = api.staleRoutes();
  return `${code} ${joined.result} ${said} ${left.content} ${stale.length}`;
}
