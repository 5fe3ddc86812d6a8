import { Column, CreateDateColumn, Entity, PrimaryGeneratedColumn } from "typeorm";

/** Someone who may post prayers: reading them needs no account. */
@Entity({ name: "users" })
export class User {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: "varchar", length: 254, unique: true })
  email: string;

  @Column({ type: "varchar", length: 80 })
  name: string;

  /** scrypt$N$r$p$salt$key, base64 (src/auth/passwords.ts); never the password. */
  @Column({ name: "password_hash", type: "text" })
  passwordHash: string;

  @CreateDateColumn({ name: "created_at", type: "timestamptz" })
  createdAt: Date;
}
